"""``blender -b scene.blend --python-exit-code 1 -P blender_addon/batch.py -- …`` with the real
Blender binary (Debian's 3.4), on a folder of WAVs: exit codes, one progress line per clip, and
the saved .blend files read back by Blender. The engine is the stand-in
(tests/blender/fake_engine.py, same CLI and protocol) so the run is fast and the expected
frames are known; the real engine's output is checked vertex-exact in the window suite.
Missing ``blender`` fails with the install command, never skips.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "blender" / "fake_engine.py"
BATCH = ROOT / "blender_addon" / "batch.py"
HINT = "Debian's Blender is needed: `sudo apt-get install -y blender xvfb python3-numpy` (or `make sysdeps`)"

MAKE_SCENE = """
import sys, bpy
sys.path.insert(0, {root!r})
from blender_addon import head
for o in list(bpy.data.objects):
    bpy.data.objects.remove(o)
obj = head.build_head(bpy.context, {obj!r}, {masks!r})
obj.name = "Face"
bpy.ops.wm.save_as_mainfile(filepath={out!r})
"""

READ_BACK = """
import json, os, sys, bpy
import numpy as np
obj = bpy.data.objects["Face"]
mods = [(m.name, m.type, bpy.path.abspath(m.filepath), m.frame_start) for m in obj.modifiers if m.type == "MESH_CACHE"]
se = bpy.context.scene.sequence_editor
strips = sorted((s.name, s.frame_start) for s in se.sequences_all) if se else []
out = {{"mods": mods, "strips": strips, "frames": {{}}}}
for f in (10, 20):
    bpy.context.scene.frame_set(f)
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    out["frames"][f] = co.tolist()
with open({result!r}, "w") as fh:
    json.dump(out, fh)
"""


def _blender() -> str:
    exe = shutil.which("blender")
    if exe is None:
        pytest.fail(f"`blender` not found: {HINT}")
    return exe


def _run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    blender = _blender()
    work = tmp_path_factory.mktemp("batch3")
    out = work / "scene.blend"
    assets = ROOT / "engine" / "assets"
    code = MAKE_SCENE.format(root=str(ROOT), obj=str(assets / "default_head.obj"),
                             masks=str(assets / "default_head.masks.json"), out=str(out))
    p = _run([blender, "-b", "--factory-startup", "--python-exit-code", "1", "--python-expr", code])
    assert p.returncode == 0 and out.is_file(), p.stdout[-2000:] + p.stderr[-2000:]
    return out


def _speak(path: Path, text: str) -> None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is needed (make sysdeps)")
    subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True)


def _batch(scene: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([_blender(), "-b", str(scene), "--python-exit-code", "1", "-P", str(BATCH), "--",
                 "--python", sys.executable, "--engine-script", str(FAKE), *args])


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.xdist_group("blender_batch")
def test_batch_folder_of_wavs_in_real_blender(scene: Path, tmp_path: Path) -> None:
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    _speak(wavs / "a_first.wav", "Good morning.")
    _speak(wavs / "b_second.wav", "Bob bought a big blue map.")
    (wavs / "notes.txt").write_text("not audio, not picked up\n")
    out = tmp_path / "out"
    p = _batch(scene, "--audio-dir", str(wavs), "--object", "Face", "--mode", "cache", "--start-frame", "5",
               "--out", str(out) + "/")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("parley: [")]
    assert len(lines) == 2, p.stdout
    assert lines[0].startswith("parley: [1/2] a_first:") and lines[1].startswith("parley: [2/2] b_second:")
    assert all("frames from frame 5" in ln for ln in lines)
    pids = {ln.rsplit("engine pid ", 1)[1].rstrip(")") for ln in lines}
    assert len(pids) == 1, f"the clips ran on several engines (one warm engine expected): {lines}"
    for clip in ("a_first", "b_second"):
        blend = out / f"{clip}.blend"
        assert blend.is_file()
        assert not list(out.glob("*.parley-tmp.blend*")), "temporary .blend left behind"
        result = tmp_path / f"{clip}.json"
        r = _run([_blender(), "-b", str(blend), "--python-exit-code", "1", "--python-expr",
                  READ_BACK.format(result=str(result))])
        assert r.returncode == 0, r.stderr[-2000:]
        back = json.loads(result.read_text())
        assert len(back["mods"]) == 1 and back["mods"][0][1] == "MESH_CACHE" and back["mods"][0][3] == 5.0
        cache = Path(back["mods"][0][2])
        assert cache.is_file() and cache.parent == out / "parley_cache", cache
        assert back["strips"] == [(clip, 5.0)] or [tuple(s) for s in back["strips"]] == [(clip, 5.0)]
        # the fake engine's frames (known formula) at scene frames 10 and 20 = clip frames 5 and 15
        sys.path.insert(0, str(ROOT / "tests" / "blender"))
        import fake_engine

        from engine.exporters import read_pc2

        frames, _ = read_pc2(str(cache))
        template = np.array([[float(x) for x in ln.split()[1:4]] for ln in
                             open(ROOT / "engine" / "assets" / "default_head.obj") if ln.startswith("v ")], np.float32)
        expected = fake_engine.fake_frames(template, len(frames))
        np.testing.assert_array_equal(frames, expected)
        for f, t in (("10", 5), ("20", 15)):
            np.testing.assert_array_equal(np.asarray(back["frames"][f], np.float32).reshape(-1, 3), expected[t])


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.xdist_group("blender_batch")
def test_batch_exit_codes_in_real_blender(scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    _speak(wavs / "good.wav", "Hello.")
    (wavs / "broken.wav").write_text("not audio")
    out = tmp_path / "out"
    argv = tmp_path / "argv.jsonl"
    monkeypatch.setenv("PARLEY_FAKE_ARGV", str(argv))
    # one clip fails (the stand-in engine cannot read it): exit 1, the good clip is still baked;
    # --postprocess reaches the engine of every clip
    p = _batch(scene, "--audio-dir", str(wavs), "--object", "Face", "--out", str(out) + "/", "--postprocess", "none")
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    runs = [json.loads(ln) for ln in argv.read_text().splitlines()]
    assert len(runs) == 2 and all(r[r.index("--postprocess") + 1] == "none" for r in runs), runs
    assert "[1/2] broken: FAILED" in p.stdout and "[2/2] good:" in p.stdout
    assert "1 of 2 clip(s) failed" in p.stderr
    assert sorted(f.name for f in out.iterdir() if f.suffix == ".blend") == ["good.blend"]
    # bad arguments: exit 2 with a message, nothing written
    p2 = _batch(scene, "--audio-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "x.blend"))
    assert p2.returncode == 2 and "is not a folder" in p2.stderr, p2.stderr[-2000:]
    p4 = _batch(scene, "--audio", str(wavs / "good.wav"), "--postprocess", "snap", "--out", str(tmp_path / "z.blend"))
    assert p4.returncode == 2 and "invalid choice: 'snap'" in p4.stderr, p4.stderr[-2000:]
    p3 = _batch(scene, "--audio", str(wavs / "good.wav"), "--object", "Nope", "--out", str(tmp_path / "y.blend"))
    assert p3.returncode == 1 and "no object named 'Nope'" in p3.stderr
    assert not (tmp_path / "x.blend").exists() and not (tmp_path / "y.blend").exists()


MAKE_DIALOGUE = """
import sys, bpy
sys.path.insert(0, {root!r})
from blender_addon import head
for o in list(bpy.data.objects):
    bpy.data.objects.remove(o)
for name in ("Alice", "Bob"):
    head.build_head(bpy.context, {obj!r}, {masks!r}).name = name
se = bpy.context.scene.sequence_editor_create()
coll = se.strips if hasattr(se, "strips") else se.sequences
for name, wav, frame, ch in {strips!r}:
    coll.new_sound(name=name, filepath=wav, channel=ch, frame_start=frame)
bpy.ops.wm.save_as_mainfile(filepath={out!r})
"""

READ_DIALOGUE = """
import json, bpy
import numpy as np
out = {{}}
for name in ("Alice", "Bob"):
    obj = bpy.data.objects[name]
    out[name] = {{"mods": [(m.name, m.frame_start) for m in obj.modifiers if m.type == "MESH_CACHE"], "frames": {{}}}}
    for f in {frames!r}:
        bpy.context.scene.frame_set(f)
        ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        me = ev.to_mesh()
        co = np.empty(len(me.vertices) * 3, np.float32)
        me.vertices.foreach_get("co", co)
        ev.to_mesh_clear()
        out[name]["frames"][str(f)] = co.tolist()
with open({result!r}, "w") as fh:
    json.dump(out, fh)
"""


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.xdist_group("blender_batch")
def test_batch_from_strips_in_real_blender(tmp_path: Path) -> None:
    """``--from-strips``: every sound strip onto its character (name-prefix rule) in one .blend."""
    blender = _blender()
    for name, text in (("a", "Hello Bob."), ("b", "Hi Alice."), ("c", "Bye.")):
        _speak(tmp_path / f"{name}.wav", text)
    strips = [("Alice_hello", str(tmp_path / "a.wav"), 1, 1), ("Bob_reply", str(tmp_path / "b.wav"), 40, 2),
              ("Alice_bye", str(tmp_path / "c.wav"), 90, 1)]
    assets = ROOT / "engine" / "assets"
    scene = tmp_path / "dialogue.blend"
    p = _run([blender, "-b", "--factory-startup", "--python-exit-code", "1", "--python-expr",
              MAKE_DIALOGUE.format(root=str(ROOT), obj=str(assets / "default_head.obj"),
                                   masks=str(assets / "default_head.masks.json"), strips=strips, out=str(scene))])
    assert p.returncode == 0, p.stderr[-2000:]
    out = tmp_path / "out" / "baked.blend"
    b = _batch(scene, "--from-strips", "--strip-rule", "prefix", "--out", str(out))
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    lines = [ln for ln in b.stdout.splitlines() if ln.startswith("parley: [")]
    assert [ln.split(":")[1].strip() for ln in lines] == ["[1/3] Alice_hello -> Alice at frame 1",
                                                          "[2/3] Bob_reply -> Bob at frame 40",
                                                          "[3/3] Alice_bye -> Alice at frame 90"], b.stdout
    assert "parley: baked Alice_dialogue: frames 0-" in b.stdout and "parley: baked Bob_dialogue: frames 39-" in b.stdout
    result = tmp_path / "back.json"
    r = _run([blender, "-b", str(out), "--python-exit-code", "1", "--python-expr",
              READ_DIALOGUE.format(frames=[1, 5, 40, 45, 90, 93], result=str(result))])
    assert r.returncode == 0, r.stderr[-2000:]
    back = json.loads(result.read_text())
    assert back["Alice"]["mods"] == [["Parley Alice_dialogue", 0.0]] and back["Bob"]["mods"] == [["Parley Bob_dialogue", 39.0]]
    sys.path.insert(0, str(ROOT / "tests" / "blender"))
    import fake_engine

    template = np.array([[float(x) for x in ln.split()[1:4]] for ln in open(assets / "default_head.obj")
                         if ln.startswith("v ")], np.float32)
    ref = fake_engine.fake_frames(template, 20)
    for who, frame, t in (("Alice", 1, 0), ("Alice", 5, 4), ("Bob", 40, 0), ("Bob", 45, 5), ("Alice", 90, 0),
                          ("Alice", 93, 3)):
        got = np.asarray(back[who]["frames"][str(frame)], np.float32).reshape(-1, 3)
        np.testing.assert_array_equal(got, ref[t], err_msg=f"{who} at frame {frame}")
    # a rule that matches nothing: exit 1, nothing written
    bad = _batch(scene, "--from-strips", "--strip-rule", "table", "--map", "Nobody=Alice", "--out",
                 str(tmp_path / "none.blend"))
    assert bad.returncode == 1 and "no sound strip has a character" in bad.stderr
    assert not (tmp_path / "none.blend").exists()

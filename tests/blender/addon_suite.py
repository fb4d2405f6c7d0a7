"""Add-on checks that run inside real Blender (the ``bpy`` module, 4.5 or 5.0).

Run by tests/test_addon_blender.py as ``<python with bpy> addon_suite.py config.json results.json``
with BLENDER_USER_RESOURCES pointing at an empty temporary folder (set before bpy is
imported, so nothing touches the user's Blender). It installs the built extension zip the
way a user would, then runs each check on a fresh scene and writes
``{check: {"ok": bool, "detail": str}}``. One Blender start for all checks keeps the suite
fast; pytest turns each entry into its own test.

The engine child process runs under ``config.engine_python`` (the main venv's Python, as a
user's Blender would use a separate Python environment). ``config.engine`` is "real"
(``python -m engine animate`` with a tiny random checkpoint) or "fake"
(tests/blender/fake_engine.py, same CLI and protocol). Failure/cancel checks always use the
fake engine because it can be told to fail or stall.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import bpy
import numpy as np

CFG: dict[str, Any] = {}
CHECKS: dict[str, Callable[[], str]] = {}
HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_ENGINE = os.path.join(HERE, "fake_engine.py")


def check(fn: Callable[[], str]) -> Callable[[], str]:
    CHECKS[fn.__name__] = fn
    return fn


class Fail(AssertionError):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise Fail(msg)


# ------------------------------------------------------------------------------ helpers
def addon() -> Any:
    import importlib

    return importlib.import_module(CFG["module"])


def sub(name: str) -> Any:
    import importlib

    return importlib.import_module(f"{CFG['module']}.{name}")


def read_pc2_ref(path: str) -> np.ndarray:
    """Independent reader (the engine's), so the add-on's own reader is not checking itself."""
    sys.path.insert(0, CFG["repo"])
    from engine.exporters import read_pc2

    frames, _ = read_pc2(path)
    return np.asarray(frames, dtype=np.float32)


def fresh_scene(name: str, obj_path: str | None = None, save: bool = True) -> bpy.types.Object | None:
    """Empty scene saved as work/<name>/scene.blend (mesh caches go next to it), head imported."""
    bpy.ops.wm.read_homefile(use_empty=True)
    folder = os.path.join(CFG["work"], name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    obj = None
    if obj_path:
        bpy.ops.wm.obj_import(filepath=obj_path)
        obj = bpy.context.selected_objects[0]
        obj.name = "Face"
        bpy.context.view_layer.objects.active = obj
    if save:
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(folder, "scene.blend"))
    return obj


def settings(audio: str, mode: str = "CACHE", **kw: Any) -> Any:
    s = bpy.context.scene.parley
    s.checkpoint_source = "FILE"
    s.checkpoint_path = CFG["checkpoint"]
    s.audio_source = "FILE"
    s.audio_path = audio
    s.bake_mode = mode
    s.start_frame = kw.pop("start_frame", 10)
    s.device = "CPU"
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def set_engine(kind: str, env: dict[str, str] | None = None) -> None:
    """Point the add-on at the engine interpreter and the real or fake entry point."""
    prefs = bpy.context.preferences.addons[CFG["module"]].preferences
    prefs.interpreter_path = CFG["engine_python"]
    # this suite checks the one-shot engine process (pids killed on cancel …); the warm engine is
    # covered by tests/test_addon_warm_engine.py, the window suite and the batch tests
    prefs.keep_engine_warm = False
    ops = sub("operators")
    if not hasattr(ops, "_orig_request"):
        ops._orig_request = ops.request_from_context
    orig = ops._orig_request

    def patched(context: Any) -> Any:
        req = orig(context)
        if kind == "fake":
            req.engine_entry = (FAKE_ENGINE,)
        return req

    ops.request_from_context = patched
    strips_ops = sub("operators_strips")
    if not hasattr(strips_ops, "_orig_shared"):
        strips_ops._orig_shared = strips_ops.shared_request_settings

    def shared(context: Any) -> dict[str, Any]:
        d = strips_ops._orig_shared(context)
        if kind == "fake":
            d["engine_entry"] = (FAKE_ENGINE,)
        return d

    strips_ops.shared_request_settings = shared
    for k in ("PARLEY_FAKE_FAIL", "PARLEY_FAKE_CRASH", "PARLEY_FAKE_SLEEP", "PARLEY_FAKE_PIDFILE"):
        os.environ.pop(k, None)
    os.environ.update(env or {})


class Spy:
    """Copies the engine's output aside just before the bake consumes it (reference frames)."""

    def __init__(self) -> None:
        self.bake = sub("bake")
        self.orig = self.bake.bake
        self.copies: list[str] = []

    def __enter__(self) -> Spy:
        def spy(scene: Any, obj: Any, pc2: str, opts: Any, frames: Any = None) -> Any:
            ref = os.path.join(CFG["work"], f"ref_{len(self.copies)}_{os.path.basename(pc2)}")
            shutil.copyfile(pc2, ref)
            self.copies.append(ref)
            return self.orig(scene, obj, pc2, opts, frames)

        self.bake.bake = spy
        return self

    def __exit__(self, *exc: object) -> None:
        self.bake.bake = self.orig


def evaluated(obj: bpy.types.Object) -> np.ndarray:
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    return co.reshape(-1, 3)


def verify_playback(obj: bpy.types.Object, ref: np.ndarray, start: int, tol: float) -> str:
    """Evaluated (depsgraph) vertex positions at several frames equal the engine output."""
    t_count = len(ref)
    scene = bpy.context.scene
    worst = 0.0
    picks = sorted({0, 1, t_count // 3, t_count // 2, t_count - 2, t_count - 1})
    for t in picks + picks[::-1]:  # forwards and backwards: no stale state between frame changes
        scene.frame_set(start + t)
        err = float(np.abs(evaluated(obj) - ref[t]).max())
        worst = max(worst, err)
        expect(err <= tol, f"frame {start + t} (clip frame {t}): max |evaluated - engine| = {err:g} > {tol:g}")
    moved = float(np.abs(ref[t_count // 2] - ref[0]).max())
    expect(moved > 1e-4, f"the engine output does not move (max change {moved:g}): the check would be vacuous")
    return f"{len(picks)} frames of {t_count}, worst error {worst:g}"


def key_tolerance(ref: np.ndarray) -> float:
    """Shape keys are exact up to float32 rounding: absolute keys interpolate with a factor
    computed from eval_time/100 (off by an ulp at some frames), relative keys compute
    basis + 1.0 * (key - basis). A few ulps of the coordinate scale; mesh caches must be exact."""
    return 8 * float(np.finfo(np.float32).eps) * float(np.abs(ref).max())


def snapshot() -> dict[str, Any]:
    """Everything a bake could change (objects, modifiers, keys, actions, strips, range, files)."""
    def h(mesh: bpy.types.Mesh) -> str:
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        return hashlib.sha256(co.tobytes()).hexdigest()[:16]

    snap: dict[str, Any] = {
        "objects": sorted((o.name, o.type, o.data.name if o.data else "") for o in bpy.data.objects),
        "modifiers": {o.name: [(m.name, m.type) for m in o.modifiers] for o in bpy.data.objects},
        "meshes": {m.name: (len(m.vertices), h(m)) for m in bpy.data.meshes},
        "shape_keys": {k.name: ([kb.name for kb in k.key_blocks], k.use_relative, k.eval_time,
                                k.animation_data.action.name if k.animation_data and k.animation_data.action else None)
                       for k in bpy.data.shape_keys},
        "actions": sorted(a.name for a in bpy.data.actions),
        "sounds": sorted(s.name for s in bpy.data.sounds),
        "anim": {o.name: (o.animation_data.action.name if o.animation_data and o.animation_data.action else None)
                 for o in bpy.data.objects},
        "scenes": {},
        "files": sorted(os.path.relpath(os.path.join(dp, f), os.path.dirname(bpy.data.filepath))
                        for dp, _, fs in os.walk(os.path.dirname(bpy.data.filepath)) for f in fs)
        if bpy.data.filepath else [],
    }
    for sc in bpy.data.scenes:
        se = sc.sequence_editor
        strips = sorted((s.name, s.channel, s.frame_start) for s in (se.strips_all if hasattr(se, "strips_all")
                                                                      else se.sequences_all)) if se else None
        snap["scenes"][sc.name] = (sc.frame_start, sc.frame_end, sc.frame_current, sc.render.fps,
                                   sc.render.fps_base, strips)
    return snap


def diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k])


def run_op() -> tuple[set[str], str]:
    """The Generate operator's execute path (the modal path cannot run headless); returns the
    result and the reports it logged (bpy.ops raises RuntimeError for ERROR reports)."""
    try:
        res = bpy.ops.parley.generate()
        return set(res), ""
    except RuntimeError as exc:
        return {"CANCELLED"}, str(exc)


def engine_kind() -> str:
    return CFG["engine"]


# ------------------------------------------------------------------------------ checks
@check
def install_enable() -> str:
    mod = addon()
    expect(hasattr(bpy.types.Scene, "parley") or hasattr(bpy.context.scene, "parley"), "scene.parley not registered")
    expect(hasattr(bpy.ops.parley, "generate"), "operator parley.generate missing")
    expect(CFG["module"] in bpy.context.preferences.addons, "add-on not enabled in preferences")
    root = os.path.dirname(mod.__file__)
    expect(os.path.isfile(os.path.join(root, "engine", "__init__.py")), "engine not bundled in the installed add-on")
    expect(sub("preferences").engine_root() == root, "engine root should be the installed add-on folder")
    expect(bpy.types.PARLEY_PT_generate.bl_category == "Parley", "panel tab")
    return f"installed at {root}"


@check
def prefs_pip_command() -> str:
    p = sub("preferences")
    deps = p.deps_dir(create=True)
    expect("extensions" in deps and deps.rstrip("/").endswith("deps"), f"deps folder not add-on owned: {deps}")
    site = [q for q in sys.path if q.endswith("site-packages")]
    expect(all(not deps.startswith(s) for s in site), "deps folder inside Blender's site-packages")
    reqs = p.engine_requirements()
    expect(any(r.startswith("torch==") for r in reqs), f"torch missing from {reqs}")
    cmd = p.build_pip_command("/py", deps, ["numpy<2", "torch==2.13.0"], "--index-url https://x/simple")
    expect(cmd[:4] == ["/py", "-m", "pip", "install"], str(cmd))
    i = cmd.index("--target")
    expect(cmd[i + 1] == deps, str(cmd))
    expect(cmd[-2:] == ["torch==2.13.0", "numpy<2"], f"torch must come first among requirements: {cmd}")
    expect(cmd[cmd.index("--index-url") + 1] == "https://x/simple", str(cmd))
    expect("--user" not in cmd and "--system" not in cmd, str(cmd))
    return " ".join(cmd)


def _generate_and_verify(mode: str, relative: bool = False, name: str = "") -> str:
    obj = fresh_scene(name or f"gen_{mode}_{relative}", CFG["head_obj"])
    assert obj is not None
    set_engine(engine_kind())
    settings(CFG["wav_a"], mode, relative_keys=relative, set_frame_range=True, start_frame=10)
    with Spy() as spy:
        res, msg = run_op()
    expect(res == {"FINISHED"}, f"operator returned {res}: {msg}")
    expect(len(spy.copies) == 1, "the bake did not receive the engine output")
    ref = read_pc2_ref(spy.copies[0])
    expect(ref.shape[1] == len(obj.data.vertices), f"engine output has {ref.shape[1]} vertices")
    clip = os.path.splitext(os.path.basename(CFG["wav_a"]))[0]
    scene = bpy.context.scene
    # scene side effects: sound strip at the start frame, frame range
    se = scene.sequence_editor
    strips = list(se.strips_all if hasattr(se, "strips_all") else se.sequences_all)
    expect(len(strips) == 1 and strips[0].type == "SOUND" and strips[0].frame_start == 10,
           f"sound strip: {[(s.name, s.type, s.frame_start) for s in strips]}")
    expect(strips[0].name.startswith(clip), f"strip named {strips[0].name}, not after the clip")
    expect((scene.frame_start, scene.frame_end) == (10, 10 + len(ref) - 1),
           f"frame range {(scene.frame_start, scene.frame_end)} for {len(ref)} frames")
    if mode == "CACHE":
        mods = [m for m in obj.modifiers if m.type == "MESH_CACHE"]
        expect(len(mods) == 1 and mods[0].name == f"Parley {clip}", f"modifiers {[m.name for m in obj.modifiers]}")
        expect(mods[0].filepath == f"//parley_cache/{clip}.pc2", f"cache path {mods[0].filepath}")
        expect(mods[0].frame_start == 10, f"frame_start {mods[0].frame_start}")
        stored = bpy.path.abspath(mods[0].filepath)
        expect(np.array_equal(read_pc2_ref(stored), ref), "cache file differs from the engine output")
        tol = 0.0
    else:
        key = obj.data.shape_keys
        expect(key is not None and len(key.key_blocks) == len(ref) + 1, "one key per frame + basis")
        expect(key.use_relative == relative, f"use_relative={key.use_relative}")
        expect(key.key_blocks[1].name == f"{clip}_00000", f"key named {key.key_blocks[1].name}")
        expect(key.animation_data.action.name == f"Parley {clip}", "action not named after the clip")
        expect(not os.path.isdir(os.path.join(os.path.dirname(bpy.data.filepath), "parley_cache")),
               "shape-key mode wrote a cache folder")
        tol = key_tolerance(ref)
    detail = verify_playback(obj, ref, 10, tol)
    # the result survives save + reload (relative paths, actions)
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=bpy.data.filepath)
    detail2 = verify_playback(bpy.data.objects["Face"], ref, 10, tol)
    return f"{detail}; after reload: {detail2}"


@check
def generate_cache() -> str:
    return _generate_and_verify("CACHE")


@check
def generate_shapekeys_absolute() -> str:
    return _generate_and_verify("SHAPEKEYS")


@check
def generate_shapekeys_relative() -> str:
    return _generate_and_verify("SHAPEKEYS", relative=True)


@check
def two_clips_coexist() -> str:
    """Two clips on one object in each mode (cache on Face, shape keys on a copy), plus the
    same clip twice: everything is named after its clip, nothing is overwritten."""
    obj = fresh_scene("two_clips", CFG["head_obj"])
    assert obj is not None
    obj2 = obj.copy()
    obj2.data = obj.data.copy()
    obj2.name = "Face2"
    bpy.context.scene.collection.objects.link(obj2)
    set_engine("fake")  # naming/coexistence only; playback exactness is checked with the real engine
    out = []
    for mode, target in (("CACHE", obj), ("SHAPEKEYS", obj2)):
        bpy.context.view_layer.objects.active = target
        for wav, start in ((CFG["wav_a"], 1), (CFG["wav_b"], 200)):
            settings(wav, mode, start_frame=start)
            res, msg = run_op()
            expect(res == {"FINISHED"}, f"{mode} {wav}: {res} {msg}")
    bpy.context.view_layer.objects.active = obj
    settings(CFG["wav_a"], "CACHE", start_frame=400)
    res, msg = run_op()
    expect(res == {"FINISHED"}, f"same clip again: {res} {msg}")
    names = [m.name for m in obj.modifiers]
    a = os.path.splitext(os.path.basename(CFG["wav_a"]))[0]
    b = os.path.splitext(os.path.basename(CFG["wav_b"]))[0]
    expect(names == [f"Parley {a}", f"Parley {b}", f"Parley {a}.2"], f"modifiers {names}")
    files = sorted(os.listdir(os.path.join(os.path.dirname(bpy.data.filepath), "parley_cache")))
    expect(files == sorted([f"{a}.pc2", f"{b}.pc2", f"{a}.2.pc2"]), f"cache files {files}")
    keys = [kb.name for kb in obj2.data.shape_keys.key_blocks]
    expect(any(k.startswith(a + "_") for k in keys) and any(k.startswith(b + "_") for k in keys), "keys of both clips")
    acts = sorted(x.name for x in bpy.data.actions)
    expect(acts == sorted([f"Parley {a}", f"Parley {b}"]), f"actions {acts}")
    se = bpy.context.scene.sequence_editor
    strips = sorted((s.name, s.frame_start, s.channel) for s in se.strips_all) if hasattr(se, "strips_all") else []
    out.append(f"strips {strips}")
    return "; ".join(out + [f"modifiers {names}", f"{len(keys)} keys", f"actions {acts}"])


def _unchanged_after(run: Callable[[], tuple[set[str], str]], name: str, mode: str) -> tuple[str, dict[str, Any]]:
    obj = fresh_scene(name, CFG["head_obj"])
    assert obj is not None
    # a scene with some content of its own, to show none of it is disturbed
    obj.modifiers.new("Keep", "SUBSURF")
    bpy.context.scene.frame_start, bpy.context.scene.frame_end = 5, 77
    bpy.context.scene.frame_set(13)
    bpy.ops.wm.save_mainfile()
    settings(CFG["wav_a"], mode, set_frame_range=True)
    before = snapshot()
    res, msg = run()
    after = snapshot()
    expect(res == {"CANCELLED"}, f"expected CANCELLED, got {res}")
    expect(before == after, f"scene changed: {diff(before, after)}")
    return msg, after


@check
def engine_failure_leaves_scene_unchanged() -> str:
    out = []
    for mode in ("CACHE", "SHAPEKEYS"):
        set_engine("fake", {"PARLEY_FAKE_FAIL": "1"})
        msg, _ = _unchanged_after(run_op, f"fail_{mode}", mode)
        expect("simulated engine failure" in msg, f"the engine's message was not shown: {msg!r}")
        set_engine("fake", {"PARLEY_FAKE_CRASH": "1"})
        msg2, _ = _unchanged_after(run_op, f"crash_{mode}", mode)
        expect("exit code 1" in msg2 and "simulated crash" in msg2, f"crash message: {msg2!r}")
        out.append(f"{mode}: {msg.strip()[:80]} / {msg2.strip()[:80]}")
    return "; ".join(out)


@check
def real_engine_bad_audio_unchanged() -> str:
    if engine_kind() != "real":
        return "SKIP: real engine not available"
    bad = os.path.join(CFG["work"], "not_audio.wav")
    with open(bad, "wb") as fh:
        fh.write(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    set_engine("real")

    def run() -> tuple[set[str], str]:
        bpy.context.scene.parley.audio_path = bad
        return run_op()

    msg, _ = _unchanged_after(run, "bad_audio", "CACHE")
    expect(msg.strip() != "", "no error message")
    return msg.strip()[:200]


@check
def cancel_kills_engine_and_leaves_scene_unchanged() -> str:
    obj = fresh_scene("cancel", CFG["head_obj"])
    assert obj is not None
    pidfile = os.path.join(CFG["work"], "fake.pid")
    if os.path.exists(pidfile):
        os.unlink(pidfile)
    set_engine("fake", {"PARLEY_FAKE_SLEEP": "2", "PARLEY_FAKE_PIDFILE": pidfile})
    settings(CFG["wav_a"], "CACHE", set_frame_range=True)
    before = snapshot()
    session_mod = sub("session")
    req = sub("operators").request_from_context(bpy.context)
    s = session_mod.GenerateSession(bpy.context.scene, req)
    s.start()
    tmpdir = s.tmpdir
    t0 = time.monotonic()
    while s.poll().stage != "encode" and time.monotonic() - t0 < 30:
        time.sleep(0.05)  # what the modal timer does
    expect(s.job.state.stage == "encode", "no progress line arrived")
    expect(s.job.running, "the engine should still be running")
    with open(pidfile) as fh:
        pid = int(fh.read())
    s.cancel()  # what Esc does
    expect(not s.job.running, "engine still running after cancel")
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    expect(not alive, f"engine process {pid} survived the cancel")
    expect(tmpdir is not None and not os.path.exists(tmpdir), "temporary folder left behind")
    after = snapshot()
    expect(before == after, f"scene changed: {diff(before, after)}")
    return f"killed pid {pid} at stage {s.job.state.stage}; message {s.job.state.message!r}"


@check
def bake_failure_rolls_back() -> str:
    out = []
    bake_mod = sub("bake")
    for mode, relative in (("CACHE", False), ("SHAPEKEYS", False), ("SHAPEKEYS", True)):
        set_engine("fake")
        orig = bake_mod._set_frame_range

        def boom(*a: Any, **k: Any) -> None:
            raise bake_mod.BakeError("injected failure after the keys/modifier/strip were made")

        bake_mod._set_frame_range = boom
        try:
            def run(relative: bool = relative) -> tuple[set[str], str]:
                bpy.context.scene.parley.relative_keys = relative
                return run_op()

            msg, after = _unchanged_after(run, f"rollback_{mode}_{relative}", mode)
        finally:
            bake_mod._set_frame_range = orig
        expect("injected failure" in msg, f"message {msg!r}")
        expect(not any(f.startswith("parley_cache") for f in after["files"]), f"files left: {after['files']}")
        out.append(f"{mode}{' relative' if relative else ''}: rolled back")
    return "; ".join(out)


@check
def topology_mismatch_refused() -> str:
    out = []
    pidfile = os.path.join(CFG["work"], "topo.pid")
    for label, path in (("vertex count", CFG["head_bad_obj"]), ("faces", CFG["head_perm_obj"])):
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        set_engine("fake", {"PARLEY_FAKE_PIDFILE": pidfile})
        obj = fresh_scene(f"topo_{label[:4]}", path)
        assert obj is not None
        settings(CFG["wav_a"], "CACHE")
        before = snapshot()
        problems = sub("operators").problems(bpy.context)
        expect(any("Topology mismatch" in p for p in problems), f"panel problems: {problems}")
        res, msg = run_op()
        expect(res == {"CANCELLED"}, f"{label}: {res}")
        expect("Topology mismatch" in msg and "Face" in msg, f"{label}: message {msg!r}")
        v = len(obj.data.vertices)
        expect(f"{v} vertices" in msg and f"{CFG['ckpt_vertices']} vertices" in msg,
               f"message must name both topologies: {msg!r}")
        if label == "faces":
            expect(CFG["ckpt_fingerprint"] in msg, f"fingerprint not named: {msg!r}")
        expect(not os.path.exists(pidfile), "the engine was started despite the mismatch")
        expect(snapshot() == before, "scene changed")
        out.append(msg.strip().split("\n")[-1][:160])
    return " | ".join(out)


@check
def request_from_panel_settings() -> str:
    """Panel settings -> engine request: audio from the active sound strip (its start frame,
    no second strip), style from another object's mesh cache or sampled shape-key animation."""
    obj = fresh_scene("request", CFG["head_obj"])
    assert obj is not None
    set_engine("fake")
    ops = sub("operators")
    # a style object animated with a mesh cache (baked by the add-on itself)
    settings(CFG["wav_b"], "CACHE", start_frame=1, add_sound_strip=False)
    res, msg = run_op()
    expect(res == {"FINISHED"}, msg)
    cache_path = bpy.path.abspath(obj.modifiers[0].filepath)
    target = bpy.data.objects.new("Target", obj.data.copy())
    bpy.context.scene.collection.objects.link(target)
    bpy.context.view_layer.objects.active = target
    se = bpy.context.scene.sequence_editor_create()
    strips = se.strips if hasattr(se, "strips") else se.sequences
    strip = strips.new_sound(name="line", filepath=CFG["wav_a"], channel=3, frame_start=42)
    se.active_strip = strip
    s = settings(CFG["wav_b"], "SHAPEKEYS", start_frame=1)
    s.audio_source = "STRIP"
    s.style_source = "OBJECT"
    s.style_object = obj
    req = ops.request_from_context(bpy.context)
    expect(os.path.samefile(req.audio_path, CFG["wav_a"]), f"audio {req.audio_path}")
    expect(req.start_frame == 42 and not req.add_sound_strip, f"start {req.start_frame}, strip {req.add_sound_strip}")
    expect(req.style_path == cache_path and req.temp_files == [], f"style {req.style_path}")
    expect(req.object_name == "Target" and req.mode == "SHAPEKEYS" and req.device == "cpu", str(req))
    # a style object animated with shape keys: sampled to a temporary .npy, deleted with the session
    bpy.context.view_layer.objects.active = target
    s.audio_source = "FILE"
    s.start_frame = 1
    res, msg = run_op()
    expect(res == {"FINISHED"}, msg)
    other = bpy.data.objects.new("Other", obj.data.copy())
    bpy.context.scene.collection.objects.link(other)
    bpy.context.view_layer.objects.active = other
    s.style_object = target
    frame_before = bpy.context.scene.frame_current
    req = ops.request_from_context(bpy.context)
    expect(bpy.context.scene.frame_current == frame_before, "sampling moved the current frame")
    expect(req.style_path is not None and req.style_path.endswith(".npy") and req.temp_files == [req.style_path],
           f"style {req.style_path}")
    style = np.load(req.style_path)
    n_keys = len(target.data.shape_keys.key_blocks) - 1
    expect(style.shape == (n_keys, len(target.data.vertices), 3), f"style shape {style.shape}")
    session = sub("session").GenerateSession(bpy.context.scene, req)
    session.cleanup()
    expect(not os.path.exists(req.style_path or ""), "temporary style file not deleted")
    return f"strip start 42; style from cache {os.path.basename(cache_path)}; sampled style {style.shape}"


@check
def transcript_beside_audio_reaches_engine_and_report() -> str:
    """line.txt next to line.wav goes to the engine as --transcript (unless the option or the lip
    closing is off); the engine's warning event reaches the result and the report, at WARNING
    level, while the line is still baked."""
    obj = fresh_scene("transcript", CFG["head_obj"])
    assert obj is not None
    argv_log = os.path.join(CFG["work"], "transcript_argv.jsonl")
    if os.path.exists(argv_log):
        os.unlink(argv_log)
    set_engine("fake", {"PARLEY_FAKE_ARGV": argv_log})
    line = os.path.join(CFG["work"], "line_with_text.wav")
    shutil.copyfile(CFG["wav_a"], line)
    text = os.path.join(CFG["work"], "line_with_text.txt")
    with open(text, "w", encoding="utf-8") as fh:
        fh.write("Bob met Pam by the map.\n")
    ops = sub("operators")
    reports: list[tuple[str, str]] = []

    class Op:
        def report(self, kind: set[str], msg: str) -> None:
            reports.append((next(iter(kind)), msg))

    results = []
    for use, close in ((True, True), (False, True), (True, False)):
        settings(line, "CACHE", start_frame=1, add_sound_strip=False, use_transcript=use, close_lips=close)
        req = ops.request_from_context(bpy.context)
        results.append(sub("session").GenerateSession(bpy.context.scene, req).run(timeout=120))
    with open(argv_log) as fh:
        argvs = [json.loads(x) for x in fh]
    expect(len(argvs) == 3, f"{len(argvs)} engine runs logged")
    expect(argvs[0][argvs[0].index("--transcript") + 1] == text, f"argv {argvs[0]}")
    expect("--transcript" not in argvs[1] and "--transcript" not in argvs[2], f"argv {argvs[1:]}")
    expect(results[0].warnings == ["fake engine: transcript line_with_text.txt not used"], str(results[0].warnings))
    expect(results[1].warnings == [] and results[2].warnings == [], "warnings without a transcript")
    expect(all(r.frames > 0 for r in results), "a line was not baked")
    ops._report_result(Op(), results[0])
    ops._report_result(Op(), results[1])
    expect(reports[0][0] == "WARNING" and "baked 'line_with_text'" in reports[0][1]
           and "transcript line_with_text.txt not used" in reports[0][1], str(reports[0]))
    expect(reports[1][0] == "INFO", str(reports[1]))
    os.environ.pop("PARLEY_FAKE_ARGV", None)
    return f"argv with/without --transcript as set; report: {reports[0][1]}"


class MockLayout:
    """Stands in for UILayout (panels cannot draw headless): records labels, checks that every
    ``prop`` names a real property and every ``operator`` a registered operator."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def _child(self, *a: Any, **k: Any) -> MockLayout:
        return MockLayout(self.log)

    box = row = column = split = _child

    def prop(self, data: Any, name: str, **k: Any) -> None:
        expect(name in data.bl_rna.properties, f"draw(): no property {name!r} on {data}")

    def operator(self, idname: str, **k: Any) -> None:
        mod, op = idname.split(".")
        expect(hasattr(getattr(bpy.ops, mod), op), f"draw(): no operator {idname}")
        self.log.append(f"[{idname}]")

    def label(self, text: str = "", **k: Any) -> None:
        self.log.append(text)


@check
def panel_and_preferences_draw() -> str:
    """Run the panel's and preferences' draw code (no window headless) in a ready and a
    not-ready state; the not-ready panel says why."""
    obj = fresh_scene("draw", CFG["head_obj"])
    assert obj is not None
    set_engine("fake")
    settings(CFG["wav_a"], "SHAPEKEYS")
    log: list[str] = []
    panel_cls = bpy.types.PARLEY_PT_generate
    panel_cls.draw(type("P", (), {"layout": MockLayout(log)})(), bpy.context)
    expect(any("5672 vertices" in t or "5,672 vertices" in t for t in log), f"no topology shown: {log}")
    expect(not any("Topology mismatch" in t for t in log), f"ready state shows a problem: {log}")
    bpy.context.scene.parley.audio_path = "/nonexistent.wav"
    log2: list[str] = []
    panel_cls.draw(type("P", (), {"layout": MockLayout(log2)})(), bpy.context)
    expect("Audio file not found" in log2, f"reason not shown: {log2}")
    prefs = bpy.context.preferences.addons[CFG["module"]].preferences
    log3: list[str] = []
    class Proxy:  # the real preferences, with a mock layout
        layout = MockLayout(log3)

        def __getattr__(self, name: str) -> Any:
            return getattr(prefs, name)

    type(prefs).draw(Proxy(), bpy.context)
    expect("[parley.install_deps]" in log3 and "[parley.check_engine]" in log3, f"prefs: {log3}")
    return f"panel: {len(log)} labels; not ready: {[t for t in log2 if 'not found' in t]}"


@check
def parley_head_and_dialogue_strips() -> str:
    """Add > Mesh > Parley Head twice, three sound strips, Generate for All Strips (execute path):
    one animation per character, each line exact at its strip's frame (stand-in engine)."""
    fresh_scene("dialogue")
    if sub("head").head_paths() is None:
        raise Fail("the bundled head is missing from the installed add-on")
    for name, x in (("Alice", -0.15), ("Bob", 0.15)):
        expect(bpy.ops.mesh.parley_head_add() == {"FINISHED"}, "parley_head_add failed")
        obj = bpy.context.view_layer.objects.active
        obj.name, obj.location.x = name, x
        expect(tuple(obj.rotation_euler) == (0.0, 0.0, 0.0), "the head was rotated")
    se = bpy.context.scene.sequence_editor_create()
    coll = se.strips if hasattr(se, "strips") else se.sequences
    lines = [("Alice_hello", CFG["wav_a"], 1, 1), ("Bob_reply", CFG["wav_b"], 80, 2), ("Alice_bye", CFG["wav_b"], 200, 1)]
    for name, wav, frame, ch in lines:
        coll.new_sound(name=name, filepath=wav, channel=ch, frame_start=frame)
    set_engine("fake")
    s = bpy.context.scene.parley
    s.checkpoint_source, s.checkpoint_path, s.bake_mode, s.device = "FILE", CFG["checkpoint"], "CACHE", "CPU"
    s.strip_rule = "PREFIX"
    res, msg = set(bpy.ops.parley.generate_strips()), ""
    expect(res == {"FINISHED"}, f"generate_strips: {res}")
    sys.path.insert(0, HERE)
    import fake_engine

    out = []
    for obj_name, start in (("Alice", 0), ("Bob", 79)):
        obj = bpy.data.objects[obj_name]
        mods = [(m.name, int(m.frame_start)) for m in obj.modifiers if m.type == "MESH_CACHE"]
        expect(mods == [(f"Parley {obj_name}_dialogue", start)], f"{obj_name}: {mods}")
        out.append(f"{obj_name}: {mods[0][0]} from frame {start}")
    rest = np.empty(len(bpy.data.objects["Alice"].data.vertices) * 3, np.float32)
    bpy.data.objects["Alice"].data.vertices.foreach_get("co", rest)
    ref = fake_engine.fake_frames(rest.reshape(-1, 3), 20)
    for obj_name, frame, t in (("Alice", 1, 0), ("Alice", 6, 5), ("Bob", 85, 5), ("Alice", 204, 4)):
        bpy.context.scene.frame_set(frame)
        err = float(np.abs(evaluated(bpy.data.objects[obj_name]) - ref[t]).max())
        expect(err == 0.0, f"{obj_name} at frame {frame}: |blender - engine| = {err:g}")
    bpy.context.scene.frame_set(150)  # between Alice's lines: her rest pose
    expect(np.array_equal(evaluated(bpy.data.objects["Alice"]), rest.reshape(-1, 3)), "Alice not at rest")
    bpy.context.scene.frame_set(1)
    return "; ".join(out) + f"; {msg}"


def _batch(script: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_FAKE_")}
    env.pop("BLENDER_USER_RESOURCES", None)
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, timeout=900)


def _engine_args(kind: str) -> list[str]:
    args = ["--python", CFG["engine_python"], "--checkpoint", CFG["checkpoint"], "--device", "cpu"]
    if kind == "fake":
        args += ["--engine-script", FAKE_ENGINE]
    return args


def _strips() -> list[Any]:
    se = bpy.context.scene.sequence_editor
    return list(se.strips_all if hasattr(se, "strips_all") else se.sequences_all) if se else []


@check
def batch_end_to_end() -> str:
    """``python batch.py --mesh head.obj`` (bpy module): a folder of two clips as mesh caches,
    one clip as shape keys, each verified against the engine output; failures exit != 0."""
    script = os.path.join(CFG["repo"], "blender_addon", "batch.py")
    out_dir = os.path.join(CFG["work"], "batch_out")
    shutil.rmtree(out_dir, ignore_errors=True)
    audio_dir = os.path.join(CFG["work"], "batch_audio")
    shutil.rmtree(audio_dir, ignore_errors=True)
    os.makedirs(audio_dir)
    for w in (CFG["wav_a"], CFG["wav_b"]):
        shutil.copy(w, audio_dir)
    details = []
    refs: dict[str, np.ndarray] = {}
    clip_a, clip_b = (os.path.splitext(os.path.basename(w))[0] for w in (CFG["wav_a"], CFG["wav_b"]))
    runs = (("cache", ["--audio-dir", audio_dir], [clip_a, clip_b]),
            ("shapekeys", ["--audio", CFG["wav_b"]], [clip_b]))
    for mode, audio_args, clips in runs:
        dest = os.path.join(out_dir, mode) + os.sep
        p = _batch(script, ["--mesh", CFG["head_obj"], "--object", "Face", *audio_args, "--mode", mode,
                            "--out", dest, "--start-frame", "5", *_engine_args(engine_kind())])
        expect(p.returncode == 0, f"batch {mode} exit {p.returncode}:\n{p.stdout}\n{p.stderr}")
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("parley: [")]
        expect(len(lines) == len(clips) and all(ln.startswith(f"parley: [{i}/{len(clips)}] {c}:")
                                                for i, (ln, c) in enumerate(zip(lines, clips), 1)),
               f"one progress line per clip expected:\n{p.stdout}")
        details.append(lines[-1][:150])
        for clip in clips:
            blend = os.path.join(dest, f"{clip}.blend")
            expect(os.path.isfile(blend), f"{blend} missing")
            expect(not [f for f in os.listdir(dest) if "parley-tmp" in f], "temporary .blend left behind")
            bpy.ops.wm.open_mainfile(filepath=blend)
            obj = bpy.data.objects["Face"]
            if mode == "cache":
                mod = obj.modifiers[f"Parley {clip}"]
                expect(mod.filepath == f"//parley_cache/{clip}.pc2", mod.filepath)
                refs[clip] = read_pc2_ref(bpy.path.abspath(mod.filepath))
                verify_playback(obj, refs[clip], 5, 0.0)
            else:
                verify_playback(obj, refs[clip], 5, key_tolerance(refs[clip]))
            strips = _strips()
            expect(len(strips) == 1 and strips[0].frame_start == 5, "sound strip")
    missing = _batch(script, ["--mesh", CFG["head_obj"], "--audio", "/nonexistent.wav", "--out", "/tmp/x.blend"])
    expect(missing.returncode == 2 and "audio file not found" in missing.stderr, f"missing audio: {missing.stderr}")
    two = _batch(script, ["--mesh", CFG["head_obj"], "--audio", CFG["wav_a"], "--audio", CFG["wav_b"],
                          "--out", os.path.join(out_dir, "one.blend"), *_engine_args("fake")])
    expect(two.returncode == 2 and "{clip}" in two.stderr, f"several clips, one file: {two.stderr}")
    return " | ".join(details)


@check
def batch_from_installed_extension_with_scene() -> str:
    """The copy of batch.py inside the installed extension, on a saved scene (--scene);
    a wrong --object and an engine failure exit 1 with a message and write nothing."""
    fresh_scene("batch_scene", CFG["head_obj"])
    scene_path = bpy.data.filepath
    script = os.path.join(os.path.dirname(addon().__file__), "batch.py")
    out_dir = os.path.join(CFG["work"], "batch_scene", "out")
    out = os.path.join(out_dir, "{clip}_baked.blend")
    p = _batch(script, ["--scene", scene_path, "--audio", CFG["wav_b"], "--mode", "shapekeys", "--out", out,
                        "--set-range", *_engine_args("fake")])
    expect(p.returncode == 0, f"exit {p.returncode}:\n{p.stdout}\n{p.stderr}")
    clip = os.path.splitext(os.path.basename(CFG["wav_b"]))[0]
    blend = out.replace("{clip}", clip)
    bpy.ops.wm.open_mainfile(filepath=blend)
    key = bpy.data.objects["Face"].data.shape_keys
    expect(key is not None and not key.use_relative, "absolute shape keys expected")
    sc = bpy.context.scene
    expect(sc.frame_start == 1 and sc.frame_end == len(key.key_blocks) - 1, f"range {sc.frame_start}-{sc.frame_end}")
    before = sorted(os.listdir(out_dir))
    bad = _batch(script, ["--scene", scene_path, "--object", "Nope", "--audio", CFG["wav_a"],
                          "--out", os.path.join(out_dir, "bad.blend"), *_engine_args("fake")])
    expect(bad.returncode == 1 and "no object named 'Nope'" in bad.stderr, f"bad object: {bad.returncode} {bad.stderr}")
    env_fail = dict(os.environ, PARLEY_FAKE_FAIL="1")
    fail = subprocess.run([sys.executable, script, "--scene", scene_path, "--audio", CFG["wav_a"], "--out",
                           os.path.join(out_dir, "fail.blend"), *_engine_args("fake")],
                          capture_output=True, text=True, env=env_fail, timeout=600)
    expect(fail.returncode == 1 and "simulated engine failure" in fail.stderr, f"engine failure: {fail.stderr}")
    expect(sorted(os.listdir(out_dir)) == before, f"files written by failed runs: {os.listdir(out_dir)}")
    return p.stdout.strip().splitlines()[-1][:160]


@check
def warm_engine_reused_then_stopped_by_disable() -> str:
    """The warm engine in the bpy module (the operator's execute path): two runs on one engine
    process; disabling the add-on ends it. Last check: it re-enables the add-on at the end."""
    obj = fresh_scene("warm", CFG["head_obj"])
    assert obj is not None
    set_engine("fake")
    bpy.context.preferences.addons[CFG["module"]].preferences.keep_engine_warm = True
    settings(CFG["wav_a"], "CACHE", set_frame_range=True)
    warm = sub("warm_engine")
    pids = []
    for _ in range(2):
        res, msg = run_op()
        expect(res == {"FINISHED"}, f"operator returned {res}: {msg}")
        eng = warm.current()
        expect(eng is not None and eng.alive and not eng.jobs, "no idle warm engine after the run")
        pids.append(eng.pid)
    expect(pids[0] == pids[1], f"two runs, two engines: {pids}")
    bpy.ops.preferences.addon_disable(module=CFG["module"])
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            try:
                os.kill(pids[0], 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise Fail(f"engine {pids[0]} still running after the add-on was disabled")
        expect(warm.current() is None, "the add-on still holds an engine after disable")
    finally:
        bpy.ops.preferences.addon_enable(module=CFG["module"])
    return f"two runs on engine pid {pids[0]}; gone after disabling the add-on"


# ------------------------------------------------------------------------------ main
def install() -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    res = bpy.ops.extensions.package_install_files(filepath=CFG["zip"], repo="user_default", enable_on_install=True)
    expect("FINISHED" in res, f"install returned {res}")
    CFG["module"] = "bl_ext.user_default.parley"
    expect(CFG["module"] in bpy.context.preferences.addons, "not enabled after install")


def main() -> int:
    cfg_path, out_path = sys.argv[1], sys.argv[2]
    with open(cfg_path) as fh:
        CFG.update(json.load(fh))
    expect(os.environ.get("BLENDER_USER_RESOURCES", "").startswith(CFG["work"]), "isolated user resources")
    results: dict[str, Any] = {"_blender": bpy.app.version_string}
    only = CFG.get("only") or list(CHECKS)
    try:
        install()
    except Exception:
        results["install"] = {"ok": False, "detail": traceback.format_exc()}
        only = []
    for name in only:
        t0 = time.perf_counter()
        try:
            detail = CHECKS[name]()
            results[name] = {"ok": True, "detail": detail}
        except Exception:
            results[name] = {"ok": False, "detail": traceback.format_exc()}
        results[name]["seconds"] = round(time.perf_counter() - t0, 2)
        with open(out_path, "w") as fh:
            json.dump(results, fh, indent=1)
    # unregister so no engine process or timer outlives Blender (4.5 hangs on leftover timers)
    try:
        bpy.ops.preferences.addon_disable(module=CFG["module"])
    except Exception:
        pass
    with open(out_path, "w") as fh:
        json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    # a normal exit on purpose: a timer or thread left behind by the add-on would hang here
    # (Blender 4.5 waits for registered bpy.app.timers) and the caller's timeout would fail the test
    sys.exit(main())

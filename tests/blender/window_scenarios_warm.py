"""Real-window scenarios of the warm engine (blender_addon/warm_engine.py), run by window_driver.py.

* ``warm_two_clicks_reuse_engine`` -- the engine started as at add-on enable (preference) returns
  at once; two Generate clicks with the real engine then run on that one process (same pid,
  still alive, idle), each bakes; click->baked times go to ``_timings``.
* ``warm_engine_killed_between_clicks`` -- the engine is killed while idle: the next click
  works on a new engine and says once that the old one had stopped; the click after that says
  nothing. Then disabling the add-on kills the (idle) engine.
* ``shipped_methods_bake`` -- the papers' models shipped beside the default (``wav2sem``,
  ``crossmodal``) chosen in the Model dropdown and clicked with the real engine: each bakes
  vertex-exact against what the engine wrote, the lips move, the two models differ, and the
  warm engine switched checkpoints without restarting.
* ``transcript_beside_audio`` -- ``line.txt`` next to ``line.wav``: the click sends it to the
  engine as ``--transcript`` and bakes with no warning; after the text is changed to a word the
  aligner cannot pronounce the click still bakes, and the report says the transcript was not used.

Esc mid-request (the request stops, the engine stays warm and the next click uses it) is
``esc_mid_run_cancels`` in window_scenarios.py; disabling mid-run is ``disable_addon_mid_run``.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Generator

import addon_utils
import bpy
import numpy as np
from window_rig import (
    CFG,
    MODULE,
    RESULTS,
    _instrument_panel,
    addon_mod,
    EngineSpy,
    clear_reports,
    click,
    engine_pid,
    expect,
    open_scene,
    pid_alive,
    reports,
    running,
    scenario,
    screenshot,
    set_engine,
    settings,
    view3d,
    wait_until,
    warm_pid,
)


def click_and_bake(what: str, **setup: object) -> Generator[float, None, tuple[float, int, list[str]]]:
    """Panel settings (again: an Undo of the previous bake also undoes them), one Generate click
    until the operator ends; (seconds, engine pid, reports)."""
    settings(**{"checkpoint_source": "DEFAULT", "audio_source": "FILE", "audio_path": CFG["wav_5s"], "start_frame": 1,
                "set_frame_range": True, **setup})
    clear_reports()
    t0 = time.monotonic()
    res = click("parley.generate")
    expect(res == {"RUNNING_MODAL"}, f"{what}: the click returned {res}: {reports()}")
    pid = engine_pid()
    expect(pid is not None, f"{what}: no engine process")
    while running():
        expect(time.monotonic() - t0 < CFG["timeout"], f"{what}: the bake did not finish")
        yield 0.02
    seconds = time.monotonic() - t0
    new = reports()
    expect(any("baked" in r for r in new), f"{what}: no success report: {new}")
    return seconds, int(pid), new


@scenario
def warm_two_clicks_reuse_engine() -> Generator[float, None, str]:
    yield from open_scene("base")
    set_engine("real")
    # "Start it when the add-on is enabled": what register()'s one-shot timer runs. It returns at
    # once (the model loads in the background) and the clicks below use that engine.
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.start_engine_on_enable = True
    addon_mod("warm_engine").shutdown()
    t0 = time.monotonic()
    expect(__import__(MODULE)._start_engine_if_wanted() is None, "the start timer must be one-shot")
    started_in = time.monotonic() - t0
    prefs.start_engine_on_enable = False
    early = warm_pid()
    expect(early is not None, "no engine after the enable-time start")
    expect(started_in < 1.0, f"starting the engine blocked the UI for {started_in:.2f} s")
    times, pids = [], []
    for i in range(2):
        s, pid, _ = yield from click_and_bake(f"click {i + 1}", bake_mode="CACHE")
        times.append(s)
        pids.append(pid)
        with bpy.context.temp_override(**view3d()):
            bpy.ops.ed.undo()  # the next click bakes onto the same, unanimated head
        yield 0.2
    expect(pids[0] == pids[1] == early, f"the clicks did not both use the engine started at enable: "
                                         f"{early} then {pids}")
    expect(pid_alive(pids[0]) and warm_pid() == pids[0], f"the engine {pids[0]} is not alive and warm")
    expect(not addon_mod("warm_engine").current().jobs, "the engine still has open requests")
    RESULTS.setdefault("_timings", {})["warm_clicks"] = [round(t, 2) for t in times]
    return (f"engine started at enable in {started_in:.3f} s (pid {early}, loading in the background); two clicks "
            f"on it: click->baked {times[0]:.2f} s, {times[1]:.2f} s")


@scenario
def warm_engine_killed_between_clicks() -> Generator[float, None, str]:
    yield from open_scene("base")
    set_engine("fake", {"PARLEY_FAKE_SLEEP": "0.05"})
    _, first, _ = yield from click_and_bake("click before the kill", bake_mode="SHAPEKEYS")
    os.kill(first, signal.SIGKILL)
    yield from wait_until(lambda: not pid_alive(first), 5, "the engine to die")
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.undo()
    yield 0.2
    _, second, r2 = yield from click_and_bake("click after the kill", bake_mode="SHAPEKEYS")
    expect(second != first and pid_alive(second), f"no new engine after the kill (pids {first}, {second})")
    said = [r for r in r2 if "had stopped" in r]
    expect(len(said) == 1 and "exit code -9" in said[0] and "restarted" in said[0],
           f"the click after the kill should say once that the engine had stopped: {r2}")
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.undo()
    yield 0.2
    _, third, r3 = yield from click_and_bake("the click after that", bake_mode="SHAPEKEYS")
    expect(third == second, f"the third click started another engine ({second} -> {third})")
    expect(not any("had stopped" in r for r in r3), f"the notice was repeated: {r3}")
    # disabling the add-on kills the idle engine
    addon_utils.disable(MODULE, default_set=True)
    yield from wait_until(lambda: not pid_alive(third), 5, "the engine to exit after disabling the add-on")
    addon_utils.enable(MODULE, default_set=True)
    _instrument_panel()
    expect(hasattr(bpy.types.Scene, "parley"), "re-enable failed")
    return f"engine {first} killed -> next click on {second} reported {said[0]!r}; then {third} quietly; " \
           f"disabling the add-on ended {third}"


@scenario
def shipped_methods_bake() -> Generator[float, None, str]:
    """Wav2Sem and the cross-modal model from the Model dropdown, real engine, one warm process."""
    import addon_suite as suite
    from window_scenarios import _verify

    yield from open_scene("base")
    set_engine("real")
    shipped = {c.file for c in addon_mod("checkpoints").shipped()}
    out, refs, pids = [], {}, []
    for name in ("wav2sem.safetensors", "crossmodal.safetensors"):
        expect(name in shipped, f"{name} is not in the Model dropdown: {sorted(shipped)}")
        with EngineSpy() as spy:
            seconds, pid, new = yield from click_and_bake(name, checkpoint_source="SHIPPED", shipped_checkpoint=name,
                                                          bake_mode="CACHE")
        expect(not any("Traceback" in r or "Error" in r for r in new), f"{name}: error reports: {new}")
        expect(len(spy.copies) == 1, f"{name}: {len(spy.copies)} engine outputs")
        ref = suite.read_pc2_ref(spy.copies[0])
        checked = _verify(bpy.data.objects["Face"], ref, 1, 0.0)
        mesh = bpy.data.objects["Face"].data
        rest = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", rest)
        # away from the rest pose (the cross-modal model holds a near-constant open mouth: README)
        lips = float(np.linalg.norm(ref - rest.reshape(1, -1, 3), axis=2).max()) * 1000
        expect(lips > 1.0, f"{name}: the face leaves its rest pose by at most {lips:.2f} mm")
        over_time = float(np.linalg.norm(ref - ref[:1], axis=2).max()) * 1000
        bpy.context.scene.frame_set(1 + len(ref) // 2)
        yield 0.3
        screenshot(f"shipped_{name.split('.')[0]}")
        bpy.context.scene.frame_set(1)
        refs[name], pids = ref, pids + [pid]
        out.append(f"{name}: click->baked {seconds:.1f} s, {len(ref)} frames, up to {lips:.1f} mm from rest, "
                   f"{over_time:.1f} mm over time, {checked}")
        with bpy.context.temp_override(**view3d()):
            bpy.ops.ed.undo()
        yield 0.3
    a, b = refs.values()
    expect(a.shape == b.shape and float(np.abs(a - b).max()) > 1e-4, "the two models baked the same motion")
    expect(pids[0] == pids[1] and pid_alive(pids[0]), f"the warm engine restarted between models: {pids}")
    return "; ".join(out) + f"; one engine pid {pids[0]}"


@scenario
def transcript_beside_audio() -> Generator[float, None, str]:
    """A transcript next to the audio, real engine: used when it aligns, a warning when it cannot."""
    import shutil

    yield from open_scene("base")
    set_engine("real")
    line = os.path.join(CFG["work"], "line_with_text.wav")
    text = os.path.join(CFG["work"], "line_with_text.txt")
    shutil.copyfile(CFG["wav_5s"], line)
    ep = addon_mod("engine_process")
    orig, sent = ep.build_animate_command, []

    def record(python: str, req: object, *a: object, **k: object) -> list[str]:
        cmd = orig(python, req, *a, **k)
        sent.append(cmd)
        return cmd

    ep.build_animate_command = record
    out = []
    try:
        for words, warned in ((CFG["wav_5s_text"], False), ("Hello zorblax. " + CFG["wav_5s_text"], True)):
            with open(text, "w", encoding="utf-8") as fh:
                fh.write(words + "\n")
            with EngineSpy() as spy:
                seconds, _pid, new = yield from click_and_bake("transcript", audio_path=line, bake_mode="CACHE",
                                                              close_lips=True, use_transcript=True)
            expect(len(spy.copies) == 1, f"{len(spy.copies)} engine outputs")
            expect(sent and sent[-1][sent[-1].index("--transcript") + 1] == text, f"engine argv {sent[-1:]}")
            baked = [r for r in new if "baked 'line_with_text'" in r]
            expect(len(baked) == 1, f"no single bake report: {new}")
            said = "transcript not used" in baked[0] and "zorblax" in baked[0]
            expect(said == warned, f"report {baked[0]!r} (a warning expected: {warned})")
            if warned:
                yield 0.3
                screenshot("transcript_warning")
            out.append(f"{seconds:.1f} s: {baked[0]}")
            with bpy.context.temp_override(**view3d()):
                bpy.ops.ed.undo()
            yield 0.3
    finally:
        ep.build_animate_command = orig
    return " | ".join(out)

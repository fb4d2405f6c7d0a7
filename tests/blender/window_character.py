""""Any character" scenarios in a real Blender window (Debian's 3.4 under Xvfb), real clicks.

Run by tests/test_addon_window_character.py as ``blender … --python window_character.py -- config
results``: the rig of the window suite (:mod:`window_rig`: install through Preferences, real clicks,
Esc, reports, screenshots) with its ``install_legacy_zip`` scenario (:mod:`window_scenarios`) and
the scenarios below (the config's ``only`` list picks them):

* ``char_click_fit_undo`` -- a character of another topology: click Fit (modal, status bar),
  the fit is stored; landmark empties and the fitted template shown; Undo removes the fit,
  Redo brings it back.
* ``char_esc_cancels_fit`` -- Esc while fitting: engine killed, nothing stored.
* ``char_generate_vertices_undo`` -- Generate as vertices onto the fitted character (mesh
  cache with its vertex count, vertex-exact against the engine); Undo restores the scene.
* ``char_generate_shape_keys_nla`` -- Generate onto the character's own ARKit keys: an Action
  on an NLA track, curves within tolerance; screenshot with the Graph and NLA editors; Undo.
* ``char_refused_fit`` -- a rough scan: Fit is refused with the engine's "place landmarks"
  message in the reports, nothing in the scene changes.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Generator
from typing import Any

import bpy
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import window_rig as wd  # noqa: E402
import window_scenarios  # noqa: E402  (install_legacy_zip and the vertex-exact check)
from character_suite import make_character  # noqa: E402

suite = wd.suite


def char_snapshot() -> dict[str, Any]:
    snap = suite.snapshot()
    snap["props"] = {o.name: sorted(k for k in o.keys()) for o in bpy.data.objects}
    snap["nla"] = {k.name: [t.name for t in k.animation_data.nla_tracks] if k.animation_data else []
                   for k in bpy.data.shape_keys}
    return snap


def open_character(name: str) -> Generator[float, None, Any]:
    """chars_<name>.blend: the base scene with the character in place of the head (made once)."""
    path = os.path.join(wd.CFG["scenes"], f"chars_{name}.blend")
    if not os.path.isfile(path):
        yield from wd.open_scene("base")
        for o in list(bpy.data.objects):
            bpy.data.objects.remove(o)
        make_character(wd.CFG[f"char_{name}"], "Character")
        with bpy.context.temp_override(**wd.view3d()):
            bpy.ops.wm.save_as_mainfile(filepath=path)
    yield from wd.open_scene(f"chars_{name}")
    obj = bpy.data.objects["Character"]
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    with bpy.context.temp_override(**wd.view3d()):
        bpy.ops.view3d.view_selected()  # the head fills the viewport in the screenshots
    yield from wd.ensure_parley_tab()
    return obj


def char_settings(target: str, **kw: Any) -> Any:
    wd.settings(checkpoint_source="DEFAULT", audio_source="FILE", audio_path=wd.CFG["wav_5s"], start_frame=1,
                add_sound_strip=False, set_frame_range=True, use_object_template=False,
                bake_mode=kw.pop("bake_mode", "CACHE"))
    c = bpy.context.scene.parley_character
    c.target = target
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def click_and_wait(op: str, what: str) -> Generator[float, None, tuple[float, list[str], list[str | None]]]:
    wd.clear_reports()
    with wd.StatusSpy() as st:
        t0 = time.monotonic()
        res = wd.click(op)
        wd.expect(res == {"RUNNING_MODAL"}, f"{op}: the click returned {res}: {wd.reports()}")
        pid = wd.engine_pid()
        wd.expect(pid is not None and wd.pid_alive(pid), f"no engine process after clicking {what}")
        while wd.running():
            wd.expect(time.monotonic() - t0 < wd.CFG["timeout"], f"{what} did not finish")
            yield 0.1
        seconds = time.monotonic() - t0
    # Fit runs a one-shot engine (gone now); Generate a request on the warm engine (alive, idle)
    if wd.pid_alive(pid):
        eng = wd.addon_mod("warm_engine").current()
        wd.expect(eng is not None and eng.pid == pid and not eng.jobs,
                  f"engine {pid} still alive after the run and not the idle warm engine")
    wd.expect(st.texts and st.texts[-1] is None, f"status bar not cleared: {st.texts[-1:]!r}")
    return seconds, wd.reports(), st.texts


def shot(name: str) -> Generator[float, None, None]:
    """Screenshot with the pointer parked in the viewport (no tooltip over the panel)."""
    area = wd.view3d()["area"]
    wd.window().event_simulate(type="MOUSEMOVE", value="NOTHING", x=area.x + area.width // 3, y=area.y + area.height // 2)
    yield 0.8
    wd.screenshot(name)


def _ch() -> Any:
    return wd.addon_mod("character")


def _undo() -> Generator[float, None, None]:
    with bpy.context.temp_override(**wd.view3d()):
        bpy.ops.ed.undo()
    yield 0.3


def _redo() -> Generator[float, None, None]:
    with bpy.context.temp_override(**wd.view3d()):
        bpy.ops.ed.redo()
    yield 0.3


@wd.scenario
def char_click_fit_undo() -> Generator[float, None, str]:
    wd.set_engine("real")
    obj = yield from open_character("arkit")
    char_settings("VERTICES")
    probs = wd.addon_mod("operators").problems(bpy.context)
    wd.expect(any("fit it first" in p for p in probs), f"an unfitted character is not asked to be fitted: {probs}")
    yield from shot("char_panel_unfitted")
    before = char_snapshot()
    secs, reps, texts = yield from click_and_wait("parley.fit", "Fit")
    wd.expect(any("fitted 'Character'" in r for r in reps), f"no fit report: {reps}")
    obj = bpy.data.objects["Character"]
    st = _ch().fit_state(obj)
    wd.expect(st.status == "valid", f"after Fit: {st.status} {st.message}")
    wd.expect(not wd.addon_mod("operators").problems(bpy.context), "still not ready after Fit")
    progress = [t for t in texts if t]
    wd.expect(len(progress) >= 2, f"no progress in the status bar: {texts}")
    fitted = char_snapshot()
    yield from _undo()
    undone = char_snapshot()
    wd.expect(undone == before, f"undo of Fit left: {suite.diff(before, undone)}")
    yield from _redo()
    wd.expect(_ch().fit_state(bpy.data.objects["Character"]).status == "valid", "redo lost the fit")
    wd.expect(char_snapshot() == fitted, f"redo differs: {suite.diff(fitted, char_snapshot())}")
    with bpy.context.temp_override(**wd.view3d()):
        bpy.ops.parley.fit_overlay(kind="landmark")
        bpy.ops.parley.fit_overlay(kind="preview")
    obj = bpy.data.objects["Character"]
    n_lm, n_pv = len(_ch().overlays(obj, "landmark")), len(_ch().overlays(obj, "preview"))
    wd.expect(n_lm == 6 and n_pv == 1, f"overlays: {n_lm} landmarks, {n_pv} previews")
    bpy.context.scene.parley_character.show_landmarks = True
    yield from shot("char_panel_fitted")
    with bpy.context.temp_override(**wd.view3d()):
        bpy.ops.parley.fit_overlay(kind="landmark")
        bpy.ops.parley.fit_overlay(kind="preview")
        bpy.ops.wm.save_mainfile()  # the fitted character for the next scenarios
    wd.RESULTS.setdefault("_timings", {})["click_to_fit"] = round(secs, 2)
    return (f"click->fitted {secs:.1f} s ({st.message}); status {progress[:3]}; undo removed the fit exactly, "
            f"redo restored it; 6 landmark empties + wire template shown")


@wd.scenario
def char_esc_cancels_fit() -> Generator[float, None, str]:
    wd.set_engine("real")
    yield from open_character("noisy")
    char_settings("VERTICES", up_axis="Z")
    before = char_snapshot()
    tmp_before = wd.parley_tmpdirs()
    wd.clear_reports()
    res = wd.click("parley.fit")
    wd.expect(res == {"RUNNING_MODAL"}, f"click returned {res}")
    pid = wd.engine_pid()
    yield 1.0
    wd.key("ESC")
    yield from wd.wait_until(lambda: not wd.running(), 10, "the Fit to stop after Esc")
    yield from wd.wait_until(lambda: not wd.pid_alive(pid), 10, "the engine to exit")
    wd.expect(char_snapshot() == before, f"Esc left changes: {suite.diff(before, char_snapshot())}")
    wd.expect(wd.parley_tmpdirs() <= tmp_before, "temporary folder left behind")
    reps = wd.reports()
    wd.expect(any("cancelled" in r for r in reps), f"no cancel report: {reps}")
    return "Esc 1 s into Fit: engine killed, nothing stored, temp folder removed"


@wd.scenario
def char_generate_vertices_undo() -> Generator[float, None, str]:
    wd.set_engine("real")
    obj = yield from open_character("arkit")
    wd.expect(_ch().fit_state(obj).status == "valid", "the fitted character was not saved (run char_click_fit_undo)")
    char_settings("VERTICES", bake_mode="CACHE")
    before = char_snapshot()
    with wd.EngineSpy() as spy:
        secs, reps, _ = yield from click_and_wait("parley.generate", "Generate")
    wd.expect(any("baked" in r and "through its fit" in r for r in reps), f"no bake report: {reps}")
    ref = suite.read_pc2_ref(spy.copies[0])
    obj = bpy.data.objects["Character"]
    wd.expect(ref.shape[1] == len(obj.data.vertices), f"engine output {ref.shape} for {len(obj.data.vertices)}")
    checked = window_scenarios._verify(obj, ref, 1, 0.0)
    yield from _undo()
    undone = char_snapshot()
    undone["files"] = before["files"]
    wd.expect(undone == before, f"undo left: {suite.diff(before, undone)}")
    wd.RESULTS.setdefault("_timings", {})["click_to_bake_character_vertices"] = round(secs, 2)
    return f"click->baked {secs:.1f} s: {ref.shape[0]} frames x {ref.shape[1]} vertices; {checked}; undo exact"


@wd.scenario
def char_generate_shape_keys_nla() -> Generator[float, None, str]:
    wd.set_engine("real")
    obj = yield from open_character("arkit")
    c = char_settings("SHAPEKEYS", curves="SPARSE", tolerance=0.02)
    before = char_snapshot()
    cs = wd.addon_mod("character_session")
    orig, seen = cs.cf.read_weights_json, []
    cs.cf.read_weights_json = lambda p: seen.append(orig(p)) or seen[-1]
    try:
        secs, reps, _ = yield from click_and_wait("parley.generate", "Generate")
    finally:
        cs.cf.read_weights_json = orig
    wd.expect(any("NLA track" in r and "solved through the fit" in r for r in reps), f"no report: {reps}")
    w = seen[0]
    obj = bpy.data.objects["Character"]
    key = obj.data.shape_keys
    tracks = list(key.animation_data.nla_tracks)
    wd.expect(len(tracks) == 1, f"{len(tracks)} NLA tracks")
    action = tracks[0].strips[0].action
    worst, n_keys = 0.0, 0
    frames = 1 + np.arange(len(w.weights))
    for fc in action.fcurves:  # 3.4: legacy actions
        j = w.names.index(fc.data_path.split('"')[1])
        vals = np.array([fc.evaluate(float(f)) for f in frames])
        worst = max(worst, float(np.abs(vals - w.weights[:, j]).max()))
        n_keys += len(fc.keyframe_points)
    wd.expect(worst <= c.tolerance + 1e-6, f"curve error {worst}")
    # pictures: the weight curves in the Graph Editor (strip in tweak mode) and the NLA track
    yield from _show_curves(obj, tracks[0])
    wd.screenshot("char_shape_keys_curves")  # (the pointer is parked in the Graph Editor)
    yield from _hide_curves()
    yield from _undo()
    undone = char_snapshot()
    wd.expect(undone == before, f"undo left: {suite.diff(before, undone)}")
    wd.RESULTS.setdefault("_timings", {})["click_to_bake_character_shape_keys"] = round(secs, 2)
    return (f"click->baked {secs:.1f} s: {len(w.names)} keys, {n_keys} keyframes for {len(frames)} frames, "
            f"worst curve error {worst:.4f}; undo exact")


def _show_curves(obj: Any, track: Any) -> Generator[float, None, None]:
    """Split the viewport: the Graph Editor (weight curves of the strip in tweak mode) above the
    NLA editor on the left, the viewport with the Parley panel on the right. The next scenario
    opens a .blend, which brings its own layout back."""
    ov = wd.view3d()
    with bpy.context.temp_override(**ov):
        bpy.ops.screen.area_split(direction="VERTICAL", factor=0.5)
    yield 0.3
    views = sorted((a for a in wd.window().screen.areas if a.type == "VIEW_3D"), key=lambda a: a.x)
    left = views[0]
    with bpy.context.temp_override(window=wd.window(), area=left, region=next(r for r in left.regions
                                                                             if r.type == "WINDOW")):
        bpy.ops.screen.area_split(direction="HORIZONTAL", factor=0.35)
    yield 0.3
    lefts = sorted((a for a in wd.window().screen.areas if a.type == "VIEW_3D" and a.x == left.x), key=lambda a: a.y)
    nla, graph = lefts[0], lefts[1]
    nla.type = "NLA_EDITOR"
    graph.type = "GRAPH_EDITOR"
    for a in (nla, graph):
        a.spaces.active.show_region_ui = False  # the curves get the width, not the editors' sidebars
    yield 0.3
    for s in track.strips:
        s.select = True
    nla_win = next(r for r in nla.regions if r.type == "WINDOW")
    with bpy.context.temp_override(window=wd.window(), area=nla, region=nla_win):
        bpy.ops.nla.tweakmode_enter()
        bpy.ops.nla.view_all()
    yield 0.3
    g_win = next(r for r in graph.regions if r.type == "WINDOW")
    with bpy.context.temp_override(window=wd.window(), area=graph, region=g_win):
        bpy.ops.anim.channels_expand(all=True)
        bpy.ops.graph.view_all()
    bpy.context.scene.frame_set(40)
    win = wd.window()
    win.event_simulate(type="MOUSEMOVE", value="NOTHING", x=graph.x + graph.width // 2, y=graph.y + graph.height // 2)
    yield 0.8


def _hide_curves() -> Generator[float, None, None]:
    nla = next(a for a in wd.window().screen.areas if a.type == "NLA_EDITOR")
    with bpy.context.temp_override(window=wd.window(), area=nla, region=next(r for r in nla.regions
                                                                            if r.type == "WINDOW")):
        bpy.ops.nla.tweakmode_exit()
    yield 0.3


@wd.scenario
def char_refused_fit() -> Generator[float, None, str]:
    wd.set_engine("real")
    yield from open_character("noisy")
    char_settings("VERTICES", up_axis="Z")
    before = char_snapshot()
    secs, reps, _ = yield from click_and_wait("parley.fit", "Fit")
    msg = next((r for r in reps if "Fit refused" in r), None)
    wd.expect(msg is not None, f"no refusal report: {reps}")
    wd.expect("place landmarks" in msg and "Parley panel > Landmarks" in msg, f"does not say to place landmarks: {msg}")
    after = char_snapshot()
    wd.expect(after == before, f"a refused fit changed the scene: {suite.diff(before, after)}")
    yield from shot("char_fit_refused")
    return f"refused after {secs:.1f} s with: {msg[:200]}; scene unchanged"


wd.main()

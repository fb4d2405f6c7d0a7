"""Real-window scenarios: install, first clicks, bakes with Undo/Redo, Esc / load / disable
mid-run, engine failures, the preferences' buttons, the panel in every setting."""
from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from typing import Any

import addon_utils
import bpy
import numpy as np

import addon_suite as suite  # noqa: E402
from window_rig import (  # noqa: E402
    CFG,
    EngineSpy,
    MODULE,
    RESULTS,
    StatusSpy,
    _DRAWS,
    _instrument_panel,
    addon_mod,
    clear_reports,
    click,
    engine_pid,
    ensure_parley_tab,
    expect,
    files_under,
    key,
    open_scene,
    parley_tmpdirs,
    pid_alive,
    warm_pid,
    reports,
    running,
    scenario,
    screenshot,
    set_engine,
    settings,
    status_bar_crop,
    view3d,
    wait_until,
    window,
)


@scenario
def install_legacy_zip() -> Generator[float, None, str]:
    """Preferences > Add-ons > Install on the legacy zip, then enable it."""
    res = bpy.ops.preferences.addon_install(filepath=CFG["legacy_zip"])
    expect("FINISHED" in res, f"addon_install returned {res}")
    installed = os.path.join(bpy.utils.user_resource("SCRIPTS", path="addons"), MODULE)
    expect(os.path.isfile(os.path.join(installed, "__init__.py")), f"not installed into {installed}")
    expect(os.path.isfile(os.path.join(installed, "engine", "__init__.py")), "engine not bundled")
    addon_utils.enable(MODULE, default_set=True)
    expect(MODULE in bpy.context.preferences.addons, "not enabled")
    expect(hasattr(bpy.ops.parley, "generate") and hasattr(bpy.types.Scene, "parley"), "not registered")
    _instrument_panel()
    yield 0.1
    # the test scenes: the bundled head (via Add > Mesh > Parley Head when present) and a wrong mesh
    for o in list(bpy.data.objects):
        bpy.data.objects.remove(o)
    timeline = next(a for a in window().screen.areas if a.type == "DOPESHEET_EDITOR")
    timeline.type = "INFO"  # the reports, readable by the driver and visible in the screenshots
    yield from widen_sidebar()
    with bpy.context.temp_override(**view3d()):
        make_head()
        bpy.ops.view3d.view_axis(type="FRONT")
        bpy.ops.view3d.view_all()
    yield 0.3
    with bpy.context.temp_override(**view3d()):
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(CFG["scenes"], "base.blend"))
        bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2)
    bpy.context.view_layer.objects.active.name = "WrongMesh"
    with bpy.context.temp_override(**view3d()):
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(CFG["scenes"], "wrong.blend"))
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(CFG["scenes"], "other.blend"))
    make_dialogue_scene()
    yield from open_scene("base")
    yield from ensure_parley_tab()
    return f"installed into {installed}; enabled; Blender {bpy.app.version_string}"


DIALOGUE = [("Alice_hello", "wav_a", 1, 1), ("Bob_reply", "wav_b", 40, 2), ("Alice_bye", "wav_c", 90, 1)]


def make_dialogue_scene() -> None:
    """Two characters (Parley heads 'Alice' and 'Bob') and three sound strips on two channels."""
    for o in list(bpy.data.objects):
        bpy.data.objects.remove(o)
    with bpy.context.temp_override(**view3d()):
        for name, x in (("Alice", -0.15), ("Bob", 0.15)):
            make_head()
            obj = bpy.context.view_layer.objects.active
            obj.name = name
            obj.location.x = x
    scene = bpy.context.scene
    se = scene.sequence_editor_create()
    coll = se.strips if hasattr(se, "strips") else se.sequences
    for name, wav, frame, channel in DIALOGUE:
        coll.new_sound(name=name, filepath=CFG[wav], channel=channel, frame_start=frame)
    with bpy.context.temp_override(**view3d()):
        bpy.ops.view3d.view_all()
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(CFG["scenes"], "dialogue.blend"))


def widen_sidebar(pixels: int = 170) -> Iterator[float]:
    """Drag the sidebar's left edge, as a user does, so the panel's text is not cut off."""
    ov = view3d()
    ov["area"].spaces.active.show_region_ui = True
    yield 0.3
    if not bpy.app.use_event_simulate:  # blender_addon/bench.py --window runs without simulated events
        return
    ui = next(r for r in view3d()["area"].regions if r.type == "UI")
    win = window()
    x, y = ui.x + 2, ui.y + ui.height // 2
    win.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
    yield 0.1
    win.event_simulate(type="LEFTMOUSE", value="PRESS", x=x, y=y)
    for step in range(1, 6):
        win.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x - step * pixels // 5, y=y)
        yield 0.05
    win.event_simulate(type="LEFTMOUSE", value="RELEASE", x=x - pixels, y=y)
    yield 0.3


def make_head() -> None:
    if "parley_head_add" in dir(bpy.ops.mesh):
        bpy.ops.mesh.parley_head_add()
        obj = bpy.context.view_layer.objects.active
    else:
        bpy.ops.wm.obj_import(filepath=CFG["head_obj"])
        obj = [o for o in bpy.data.objects if o.type == "MESH"][0]
    obj.name = "Face"
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)


def _click_bake(mode: str, shots: bool) -> Generator[float, None, str]:
    yield from open_scene("base")
    set_engine("real")
    cache = os.path.join(CFG["scenes"], "parley_cache")
    settings(checkpoint_source="DEFAULT", audio_source="FILE", audio_path=CFG["wav_5s"], bake_mode=mode,
             start_frame=5, relative_keys=False, add_sound_strip=True, set_frame_range=True)
    obj = bpy.data.objects["Face"]
    expect(bpy.context.active_object == obj, "the head is not the active object")
    yield from ensure_parley_tab()
    before = suite.snapshot()
    before_files = files_under(cache)
    shot_before = screenshot("panel_before") if shots else None
    clear_reports()
    with StatusSpy() as st, EngineSpy() as spy:
        t0 = time.monotonic()
        res = click("parley.generate")
        expect(res == {"RUNNING_MODAL"}, f"the click returned {res}: {reports()}")
        pid = engine_pid()
        expect(pid is not None and pid_alive(pid), "no engine process after the click")
        shot_mid = None
        while running():
            expect(time.monotonic() - t0 < CFG["timeout"], "the bake did not finish")
            if shots and shot_mid is None and addon_mod("modal_ui").current().fraction > 0.1:
                shot_mid = screenshot("panel_during")
            yield 0.1
        seconds = time.monotonic() - t0
    new = reports()
    expect(any("baked" in r for r in new), f"no success report; reports: {new}")
    expect(not any("Traceback" in r or "Error" in r for r in new), f"error reports: {new}")
    expect(pid_alive(pid) and warm_pid() == pid, f"engine pid {pid} is not the warm engine after the bake "
                                                 f"(warm: {warm_pid()})")
    expect(not addon_mod("warm_engine").current().jobs, "the warm engine still has open requests")
    if shots:  # the status bar really showed the progress text (pixels, not just our calls)
        expect(shot_mid is not None, "no screenshot while the engine reported progress")
        change = float(np.abs(status_bar_crop(shot_mid) - status_bar_crop(shot_before)).mean())
        expect(change > 0.002, f"the status bar looks the same before and during the bake ({change:g})")
    progress = [t for t in st.texts if t]
    expect(len(progress) >= 2 and progress[0] != progress[-1], f"status bar did not change: {st.texts}")
    expect(st.texts[-1] is None, f"status bar not cleared at the end: {st.texts[-1]!r}")
    # the 0.1 s modal timer redraws only when the text changed (under load each redraw slowed the engine)
    expect(st.repeats <= 1, f"{st.repeats} of {st.calls} status-bar writes repeated the text already shown")
    expect(len(spy.copies) == 1, f"{len(spy.copies)} engine outputs")
    ref = suite.read_pc2_ref(spy.copies[0])
    after = suite.snapshot()
    expect(after != before, "the scene did not change")
    # vertex-exact against the engine's output, frames forwards and backwards
    tol = 0.0 if mode == "CACHE" else suite.key_tolerance(ref)
    checked = _verify(obj, ref, 5, tol)
    if shots:
        bpy.context.scene.frame_set(5 + len(ref) // 2)
        yield 0.3
        screenshot("panel_after")
        bpy.context.scene.frame_set(1)
    # Undo returns the scene exactly to its earlier state, Redo brings the bake back
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.undo()
    yield 0.3
    undone = suite.snapshot()
    undone["files"] = before["files"]  # the cache file stays on disk (not part of the undo)
    expect(undone == before, f"undo left: {suite.diff(before, undone)}")
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.redo()
    yield 0.3
    redone = suite.snapshot()
    expect(redone == after, f"redo differs: {suite.diff(after, redone)}")
    checked2 = _verify(bpy.data.objects["Face"], ref, 5, tol)
    new_files = sorted(set(files_under(cache)) - set(before_files))
    expect((len(new_files) == 1) == (mode == "CACHE"), f"cache files written: {new_files}")
    RESULTS.setdefault("_timings", {})[f"click_to_bake_{mode.lower()}"] = round(seconds, 2)
    return (f"{mode}: click->baked {seconds:.1f} s for {len(ref)} frames; status texts {progress[:4]}…; "
            f"{checked}; after undo+redo {checked2}; undo restored the scene exactly")


def _verify(obj: Any, ref: np.ndarray, start: int, tol: float) -> str:
    scene = bpy.context.scene
    t_count = len(ref)
    picks = sorted({0, 1, t_count // 3, t_count // 2, t_count - 2, t_count - 1})
    worst = 0.0
    for t in picks + picks[::-1]:
        scene.frame_set(start + t)
        err = float(np.abs(suite.evaluated(obj) - ref[t]).max())
        worst = max(worst, err)
        expect(err <= tol, f"frame {start + t}: max |blender - engine| = {err:g} > {tol:g}")
    moved = float(np.abs(ref[t_count // 2] - ref[0]).max())
    expect(moved > 1e-4, f"the engine output does not move ({moved:g}): vacuous check")
    scene.frame_set(1)
    return f"{len(picks)} frames x2 exact (worst {worst:g}, tol {tol:g})"


@scenario
def parley_head_upright() -> Generator[float, None, str]:
    """Add > Mesh > Parley Head: upright (no importer rotation), exact vertex order, materials."""
    yield from open_scene("base")
    menu_funcs = bpy.types.VIEW3D_MT_mesh_add._dyn_ui_initialize()
    expect(any(getattr(f, "__module__", "").startswith(MODULE) for f in menu_funcs), "no entry in Add > Mesh")
    for o in list(bpy.data.objects):
        bpy.data.objects.remove(o)
    clear_reports()
    with bpy.context.temp_override(**view3d()):
        res = bpy.ops.mesh.parley_head_add()
    expect(res == {"FINISHED"}, f"parley_head_add returned {res}")
    obj = bpy.context.view_layer.objects.active
    expect(obj is not None and obj.type == "MESH", "no active mesh after adding the head")
    expect(tuple(obj.rotation_euler) == (0.0, 0.0, 0.0), f"rotated: {tuple(obj.rotation_euler)}")
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    ref = np.array([[float(x) for x in ln.split()[1:4]] for ln in open(CFG["head_obj"]) if ln.startswith("v ")],
                   np.float32)
    expect(co.reshape(-1, 3).shape == ref.shape and np.array_equal(co.reshape(-1, 3), ref),
           "vertices differ from default_head.obj (order or axes)")
    world_z = [(obj.matrix_world @ v.co).z for v in obj.data.vertices]
    extent = np.ptp(co.reshape(-1, 3), axis=0)
    expect(extent[2] >= extent[1] * 0.9, f"not upright: extent x,y,z = {extent}")
    mats = [m.name for m in obj.data.materials]
    idx = np.empty(len(obj.data.polygons), np.int32)
    obj.data.polygons.foreach_get("material_index", idx)
    used = sorted({mats[i] for i in idx})
    for want in ("Parley Skin", "Parley Teeth", "Parley Eye", "Parley Iris", "Parley Lips"):
        expect(want in used, f"material {want} not used; used {used}")
    settings(checkpoint_source="DEFAULT", audio_source="FILE", audio_path=CFG["wav_5s"])
    probs = addon_mod("operators").problems(bpy.context)
    expect(not probs, f"the added head is not ready to animate: {probs}")
    new = reports()
    expect(any("Parley Head" in r and "next" in r for r in new), f"no next-step report: {new}")
    yield from ensure_parley_tab()
    screenshot("parley_head_added")
    return (f"{len(ref)} vertices identical to the OBJ, rotation 0, height {max(world_z) - min(world_z):.3f} "
            f"(z extent {extent[2]:.3f} vs y {extent[1]:.3f}); materials used {used}; report {new[-1]!r}")


@scenario
def click_bake_cache_undo_redo() -> Generator[float, None, str]:
    return (yield from _click_bake("CACHE", shots=True))


@scenario
def click_bake_shapekeys_undo_redo() -> Generator[float, None, str]:
    return (yield from _click_bake("SHAPEKEYS", shots=False))


def _start_slow_run(name: str) -> Generator[float, None, dict[str, Any]]:
    """Open the base scene, click Generate with a slow fake engine; returns once it is mid-run."""
    yield from open_scene("base")
    pidfile = os.path.join(CFG["work"], f"{name}.pid")
    if os.path.exists(pidfile):
        os.unlink(pidfile)
    set_engine("fake", {"PARLEY_FAKE_SLEEP": "1.0", "PARLEY_FAKE_PIDFILE": pidfile})
    settings(checkpoint_source="DEFAULT", audio_source="FILE", audio_path=CFG["wav_5s"], bake_mode="CACHE",
             set_frame_range=True)
    before = suite.snapshot()
    tmp_before = parley_tmpdirs()
    res = click("parley.generate")
    expect(res == {"RUNNING_MODAL"}, f"click returned {res}: {reports()}")
    yield from wait_until(lambda: os.path.exists(pidfile) and os.path.getsize(pidfile) > 0, 30, "the engine pid")
    ui = addon_mod("modal_ui").current()
    yield from wait_until(lambda: ui.fraction > 0, 30, "the first progress line")
    with open(pidfile) as fh:
        pid = int(fh.read())
    expect(pid_alive(pid), "engine not running mid-run")
    return {"before": before, "pid": pid, "tmp_before": tmp_before, "ui": ui}


def _check_stopped(run: dict[str, Any], what: str, warm_stays: bool) -> str:
    """The request stopped; the warm engine is still loaded (Esc, file load) or gone (disable)."""
    if warm_stays:
        expect(pid_alive(run["pid"]) and warm_pid() == run["pid"], f"the warm engine {run['pid']} died on {what}")
        expect(not addon_mod("warm_engine").current().jobs, f"the engine still runs a request after {what}")
    else:
        expect(not pid_alive(run["pid"]), f"engine pid {run['pid']} survived {what}")
    expect(not running(), f"the progress UI is still open after {what}")
    left = parley_tmpdirs() - run["tmp_before"]
    expect(not left, f"temporary folders left after {what}: {left}")
    cache = os.path.join(CFG["scenes"], "parley_cache")
    state = "still warm" if warm_stays else "gone"
    return f"request stopped, engine pid {run['pid']} {state}, no temp folder, cache folder {files_under(cache) or 'empty'}"


@scenario
def esc_mid_run_cancels() -> Generator[float, None, str]:
    cache = os.path.join(CFG["scenes"], "parley_cache")
    cache_before = files_under(cache)
    with StatusSpy() as st:
        run = yield from _start_slow_run("esc")
        screenshot("esc_mid_run")
        clear_reports()
        key("ESC")
        yield from wait_until(lambda: not running(), 10, "the operator to end after Esc")
        yield 0.3
    msg = _check_stopped(run, "Esc", warm_stays=True)
    expect(files_under(cache) == cache_before, f"cache folder changed: {files_under(cache)}")
    after = suite.snapshot()
    expect(after == run["before"], f"scene changed: {suite.diff(run['before'], after)}")
    new = reports()
    expect(any("cancelled" in r for r in new), f"no cancel report: {new}")
    expect(st.texts[-1] is None, f"status bar not cleared: {st.texts}")
    # the engine stayed warm: the next click runs on the same process and bakes
    clear_reports()
    res = click("parley.generate")
    expect(res == {"RUNNING_MODAL"}, f"second click returned {res}: {reports()}")
    expect(engine_pid() == run["pid"], f"second click ran on pid {engine_pid()}, not the warm {run['pid']}")
    yield from wait_until(lambda: not running(), 60, "the second click to finish")
    again = reports()
    expect(any("baked" in r for r in again), f"the click after Esc did not bake: {again}")
    return f"{msg}; reports {new}; status texts {st.texts}; next click on the same engine: {again[-1]!r}"


@scenario
def load_blend_mid_run_cancels() -> Generator[float, None, str]:
    base = os.path.join(CFG["scenes"], "base.blend")
    mtime = os.path.getmtime(base)
    run = yield from _start_slow_run("load")
    with bpy.context.temp_override(**view3d()):
        bpy.ops.wm.open_mainfile(filepath=os.path.join(CFG["scenes"], "other.blend"))
    yield 0.5
    yield from wait_until(lambda: not running(), 10, "the run to stop")
    msg = _check_stopped(run, "loading another .blend", warm_stays=True)
    expect(os.path.getmtime(base) == mtime, "base.blend was written")
    expect(bpy.data.objects.get("WrongMesh") is not None, "other.blend did not load")
    yield from open_scene("base")
    after = suite.snapshot()
    expect(after == run["before"], f"scene changed: {suite.diff(run['before'], after)}")
    return msg


@scenario
def disable_addon_mid_run() -> Generator[float, None, str]:
    run = yield from _start_slow_run("disable")
    addon_utils.disable(MODULE, default_set=True)
    yield 0.5
    expect(not hasattr(bpy.ops.parley, "generate") or "generate" not in dir(bpy.ops.parley), "still registered")
    msg = _check_stopped(run, "disabling the add-on", warm_stays=False)
    expect(addon_mod("warm_engine").current() is None, "the warm engine outlived the add-on")
    ticks = 0
    for _ in range(5):  # Blender keeps running events normally (no stale timer/handler errors)
        ticks += 1
        yield 0.2
    after = suite.snapshot()
    expect(after == run["before"], f"scene changed: {suite.diff(run['before'], after)}")
    addon_utils.enable(MODULE, default_set=True)
    _instrument_panel()
    expect(hasattr(bpy.types.Scene, "parley"), "re-enable failed")
    return msg


def _failing_click(label: str, expect_in: list[str]) -> Generator[float, None, str]:
    before = suite.snapshot()
    tmp_before = parley_tmpdirs()
    clear_reports()
    res = click("parley.generate")
    if res == {"RUNNING_MODAL"}:
        yield from wait_until(lambda: not running(), CFG["timeout"], f"{label} to end")
    yield 0.2
    new = reports()
    expect(len(new) == 1, f"{label}: expected one report, got {new}")
    text = new[0]
    expect("Traceback" not in text and "File \"" not in text, f"{label}: traceback in the report: {text}")
    for s in expect_in:
        expect(s in text, f"{label}: {s!r} not in the report {text!r}")
    expect(len(text) < 400, f"{label}: report too long ({len(text)} chars)")
    after = suite.snapshot()
    expect(after == before, f"{label}: scene changed: {suite.diff(before, after)}")
    expect(parley_tmpdirs() <= tmp_before, f"{label}: temp folders left")
    expect(not running(), f"{label}: progress UI still open")
    return f"{label}: {text}"


@scenario
def engine_failures_report_cleanly() -> Generator[float, None, str]:
    out = []
    yield from open_scene("base")
    yield from ensure_parley_tab()
    # 1. bad audio through the real engine
    set_engine("real")
    settings(checkpoint_source="DEFAULT", audio_source="FILE", audio_path=CFG["bad_wav"], bake_mode="CACHE")
    out.append((yield from _failing_click("bad audio", ["Parley"])))
    # 2. the engine's Python lacks a dependency (torch)
    set_engine("real", python=CFG["python_without_torch"])
    settings(audio_path=CFG["wav_5s"])
    out.append((yield from _failing_click("missing dependency", ["has no 'numpy' package",
                                                                  "Install Engine Dependencies"])))
    # 3. wrong topology: the button is greyed out with the reason, and a click is refused
    set_engine("real")
    yield from open_scene("wrong")
    settings(checkpoint_source="DEFAULT", audio_source="FILE", audio_path=CFG["wav_5s"], bake_mode="CACHE")
    probs = addon_mod("operators").problems(bpy.context)
    expect(any("Topology mismatch" in p for p in probs), f"panel problems: {probs}")
    out.append((yield from _failing_click("wrong topology", ["Topology mismatch", "Parley Head"])))
    # 4. a fake engine that crashes with a traceback of its own: still one readable line
    yield from open_scene("base")
    set_engine("fake", {"PARLEY_FAKE_CRASH": "1"})
    settings(checkpoint_source="DEFAULT", audio_source="FILE", audio_path=CFG["wav_5s"], bake_mode="SHAPEKEYS")
    out.append((yield from _failing_click("engine crash", ["exit code 1"])))
    screenshot("error_report")
    return " | ".join(out)


@scenario
def preferences_buttons() -> Generator[float, None, str]:
    out = []
    set_engine("real")
    clear_reports()
    res = click("parley.check_engine")
    new = reports()
    expect(res == {"FINISHED"} and any("engine OK" in r and "torch" in r for r in new), f"check: {res} {new}")
    out.append(new[-1])
    set_engine("real", python=CFG["python_without_torch"])
    clear_reports()
    res = click("parley.check_engine")
    new = reports()
    expect(res == {"CANCELLED"} and any("cannot run" in r for r in new), f"check w/o deps: {res} {new}")
    out.append(new[-1])
    # Install Engine Dependencies: pip from a local wheel folder (no network) into the deps folder
    prefs_mod = addon_mod("preferences")
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.interpreter_path = ""
    prefs.pip_extra_args = f"--no-index --find-links {CFG['wheels']}"
    orig_reqs = prefs_mod.engine_requirements
    deps = prefs_mod.deps_dir(create=False)
    try:
        for reqs, ok in ((["parley-test-dep==1.0"], True), (["parley-test-dep==9.9"], False)):
            prefs_mod.engine_requirements = lambda r=reqs: list(r)
            clear_reports()
            with StatusSpy() as st:
                res = click("parley.install_deps")
                expect(res == {"RUNNING_MODAL"}, f"install click returned {res}")
                yield from wait_until(lambda: not running(), 120, "pip to finish")
            new = reports()
            expect(len(new) == 1, f"install reports: {new}")
            if ok:
                expect("installed" in new[0], f"install: {new}")
                expect(os.path.isfile(os.path.join(deps, "parley_test_dep", "__init__.py")),
                       f"package not in {deps}: {files_under(deps)[:10]}")
                expect(deps in prefs_mod.engine_paths(prefs), "deps folder not on the engine's path")
            else:
                expect("pip failed" in new[0] and "Traceback" not in new[0], f"failed install: {new}")
            expect(len([t for t in st.texts if t]) >= 1 and st.texts[-1] is None, f"status: {st.texts}")
            out.append(new[0])
    finally:
        prefs_mod.engine_requirements = orig_reqs
        prefs.pip_extra_args = ""
    return " | ".join(out)


@scenario
def panel_draws_every_setting() -> Generator[float, None, str]:
    import itertools

    yield from open_scene("base")
    yield from ensure_parley_tab()
    ov = view3d()
    ui = next(r for r in ov["area"].regions if r.type == "UI")
    s = bpy.context.scene.parley
    s.style_object = bpy.data.objects["Face"]
    combos = list(itertools.product(["DEFAULT", "SHIPPED", "FILE"], ["FILE", "STRIP"], ["NONE", "OBJECT", "FILE"],
                                    ["CACHE", "SHAPEKEYS"], [False, True]))
    extra = [("device", d) for d in ("PREFS", "AUTO", "CUDA", "CPU")] + [("fps_source", f) for f in
                                                                          ("SCENE", "CHECKPOINT")]
    errors0 = len(_DRAWS["errors"])
    drawn = 0
    for ck, au, st, bm, rel in combos:
        s.checkpoint_source, s.audio_source, s.style_source, s.bake_mode, s.relative_keys = ck, au, st, bm, rel
        n0 = _DRAWS["n"]
        ui.tag_redraw()
        yield 0.05
        yield from wait_until(lambda n0=n0: _DRAWS["n"] > n0, 5, f"a redraw of {ck, au, st, bm, rel}", 0.02)
        drawn += 1
    for prop, val in extra:
        setattr(s, prop, val)
        n0 = _DRAWS["n"]
        ui.tag_redraw()
        yield from wait_until(lambda n0=n0: _DRAWS["n"] > n0, 5, f"a redraw with {prop}={val}", 0.02)
        drawn += 1
    # nothing selected: the panel says what to do next
    for o in bpy.context.selected_objects:
        o.select_set(False)
    bpy.context.view_layer.objects.active = None
    n0 = _DRAWS["n"]
    ui.tag_redraw()
    yield from wait_until(lambda: _DRAWS["n"] > n0, 5, "a redraw with nothing selected", 0.02)
    screenshot("panel_nothing_selected")
    errs = _DRAWS["errors"][errors0:]
    expect(not errs, f"{len(errs)} draw errors, first:\n{errs[0] if errs else ''}")
    return f"{drawn + 1} setting combinations drawn in the window without an error"

"""Drive the Parley add-on in a real Blender window, the way an animator uses it.

Run by tests/test_addon_window.py as

    xvfb-run -a -s "-screen 0 1280x800x24" blender --factory-startup --enable-event-simulate \\
        -p 0 0 1280 800 --python window_driver.py -- config.json results.json

Blender starts with a window; ``bpy.app.timers`` runs :func:`_tick`, which advances one
scenario generator at a time (a scenario ``yield``s the seconds to wait, so Blender keeps
processing events, redraws, the add-on's modal timer and the engine's output in between).
Clicks are real: ``bpy.ops.parley.generate('INVOKE_DEFAULT')`` under a
``temp_override(window, area, region)`` of the 3D viewport runs ``invoke`` and ``modal``
exactly as a button press does; Esc is ``Window.event_simulate``; reports are read back from
the window manager with ``ui.reports_to_textblock``; pictures come from
``screen.screenshot``. Each scenario writes ``{"ok", "detail", "seconds", "data"}`` into the
results JSON as soon as it ends, and prints ``=== BEGIN/END <name>`` markers so the pytest
side can show (and search) each scenario's part of the Blender log.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Generator, Iterator
from typing import Any

import addon_utils
import bpy
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import addon_suite as suite  # noqa: E402  (snapshot/diff/evaluated: the same checks as headless)

CFG: dict[str, Any] = {}
RESULTS: dict[str, Any] = {}
Scenario = Callable[[], Generator[float, None, str]]
SCENARIOS: dict[str, Scenario] = {}
MODULE = "parley"  # the legacy add-on's folder name once installed from the zip


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


class Fail(AssertionError):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise Fail(msg)


# ------------------------------------------------------------------------------ window helpers
def window() -> Any:
    return bpy.context.window_manager.windows[0]


def view3d() -> dict[str, Any]:
    """Override for the main window's 3D viewport (where the Parley sidebar lives)."""
    win = window()
    area = next(a for a in win.screen.areas if a.type == "VIEW_3D")
    region = next(r for r in area.regions if r.type == "WINDOW")
    return {"window": win, "area": area, "region": region, "screen": win.screen}


def click(op: str, **props: Any) -> set[str]:
    """A button press: the operator's invoke (and then modal) in the viewport's context.
    An ERROR report from ``invoke`` itself reaches a Python caller as RuntimeError as well as
    the console (a button press shows it in the status bar): :func:`reports` reads it there."""
    cat, name = op.split(".")
    with bpy.context.temp_override(**view3d()):
        try:
            return set(getattr(getattr(bpy.ops, cat), name)("INVOKE_DEFAULT", **props))
        except RuntimeError:
            return {"CANCELLED"}


def key(type_: str, **mods: Any) -> None:
    win = window()
    win.event_simulate(type=type_, value="PRESS", **mods)
    win.event_simulate(type=type_, value="RELEASE", **mods)


def info_area() -> dict[str, Any]:
    """Override for the Info editor the test scenes have at the bottom (was the timeline)."""
    win = window()
    area = next(a for a in win.screen.areas if a.type == "INFO")
    region = next(r for r in area.regions if r.type == "WINDOW")
    return {"window": win, "area": area, "region": region, "screen": win.screen}


_LOG_MARK = {"offset": 0}
REPORT_PREFIXES = ("Info: ", "Warning: ", "Error: ")


def reports() -> list[str]:
    """Reports since :func:`clear_reports`, i.e. what the status bar and the Info editor show.
    3.4 has no Python access to them: the window manager's list (reports of modal operators)
    is copied out of the Info editor; reports of an operator that ends inside the click
    (``invoke`` refusing, Check Engine) belong to the Python caller and Blender prints them to
    its console (``Error: …``), which the pytest side sends to CFG["log"]."""
    wm = bpy.context.window_manager
    wm.clipboard = ""
    with bpy.context.temp_override(**info_area()):
        bpy.ops.info.select_all(action="SELECT")
        bpy.ops.info.report_copy()
    # the Info editor also lists the operators run (``bpy.ops.…`` lines): not reports
    found = [ln for ln in wm.clipboard.splitlines() if ln.strip() and not ln.startswith("bpy.")]
    sys.stdout.flush()
    with open(CFG["log"], encoding="utf-8", errors="replace") as fh:
        fh.seek(_LOG_MARK["offset"])
        for ln in fh.read().splitlines():
            if ln.startswith(REPORT_PREFIXES):
                found.append(ln.split(": ", 1)[1])
    out: list[str] = []
    for r in found:  # a finished modal operator's report is in both places
        if r not in out:
            out.append(r)
    return out


def clear_reports() -> None:
    with bpy.context.temp_override(**info_area()):
        bpy.ops.info.select_all(action="SELECT")
        bpy.ops.info.report_delete()
    sys.stdout.flush()
    _LOG_MARK["offset"] = os.path.getsize(CFG["log"])


def screenshot(name: str) -> str:
    path = os.path.join(CFG["shots"], f"{name}.png")
    with bpy.context.temp_override(**view3d()):
        bpy.ops.screen.screenshot(filepath=path)
    return path


def addon_mod(name: str) -> Any:
    import importlib

    return importlib.import_module(f"{MODULE}.{name}")


def wait_until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> Iterator[float]:
    t0 = time.monotonic()
    while not cond():
        expect(time.monotonic() - t0 < timeout, f"timed out after {timeout:.0f} s waiting for {what}")
        yield step


def running() -> bool:
    return addon_mod("modal_ui").current() is not None


def open_scene(name: str) -> Iterator[float]:
    """Open a prepared .blend (a fresh undo history) and show the Parley sidebar tab."""
    with bpy.context.temp_override(**view3d()):
        bpy.ops.wm.open_mainfile(filepath=os.path.join(CFG["scenes"], f"{name}.blend"))
    yield 0.3
    show_parley_tab()
    yield 0.3


_DRAWS = {"n": 0, "errors": []}


def _instrument_panel() -> None:
    """Count real draws of the Parley panel (and keep their exceptions) without changing them."""
    panel = addon_mod("panel").PARLEY_PT_generate
    if getattr(panel, "_window_test_wrapped", False):
        return
    orig = panel.draw

    def draw(self: Any, context: Any) -> None:
        _DRAWS["n"] += 1
        try:
            orig(self, context)
        except Exception:
            _DRAWS["errors"].append(traceback.format_exc())
            raise

    panel.draw = draw
    panel._window_test_wrapped = True


def show_parley_tab() -> None:
    """Sidebar open on the Parley tab: 3.x cannot set the tab from Python, so hover the sidebar
    and Ctrl+wheel through the tabs until the Parley panel draws (what a user may do too)."""
    ov = view3d()
    space = ov["area"].spaces.active
    space.show_region_ui = True
    ui = next(r for r in ov["area"].regions if r.type == "UI")
    win = ov["window"]
    win.event_simulate(type="MOUSEMOVE", value="NOTHING", x=ui.x + ui.width // 2, y=ui.y + ui.height // 2)
    CFG.setdefault("_tab_steps", 0)


def ensure_parley_tab() -> Iterator[float]:
    """Blender 3.x cannot select a sidebar tab from Python: click down the tab column at the
    sidebar's right edge, as a user does, until the Parley panel draws."""
    ov = view3d()
    ui = next(r for r in ov["area"].regions if r.type == "UI")
    win = ov["window"]
    n0 = _DRAWS["n"]
    ui.tag_redraw()
    yield 0.3
    if _DRAWS["n"] > n0:
        return
    x = ui.x + ui.width - 10
    for y in range(ui.y + ui.height - 30, ui.y + 40, -14):
        win.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
        win.event_simulate(type="LEFTMOUSE", value="PRESS", x=x, y=y)
        win.event_simulate(type="LEFTMOUSE", value="RELEASE", x=x, y=y)
        n0 = _DRAWS["n"]
        yield 0.15
        if _DRAWS["n"] > n0:
            win.event_simulate(type="MOUSEMOVE", value="NOTHING", x=ov["area"].x + 200, y=ov["area"].y + 200)
            return
    screenshot("tab_not_found")
    raise Fail(f"could not bring the Parley sidebar tab up (the panel never drew); sidebar {ui.x},{ui.y} "
               f"{ui.width}x{ui.height}")


def settings(**kw: Any) -> Any:
    s = bpy.context.scene.parley
    s.device = "CPU"
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def set_engine(kind: str, env: dict[str, str] | None = None, python: str | None = None) -> None:
    """Engine interpreter in the preferences; ``fake`` swaps in tests/blender/fake_engine.py."""
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.interpreter_path = python or CFG["engine_python"]
    ops = addon_mod("operators")
    if not hasattr(ops, "_orig_request"):
        ops._orig_request = ops.request_from_context
    orig = ops._orig_request

    def patched(context: Any) -> Any:
        req = orig(context)
        if kind == "fake":
            req.engine_entry = (CFG["fake_engine"],)
        return req

    ops.request_from_context = patched
    for k in ("PARLEY_FAKE_FAIL", "PARLEY_FAKE_CRASH", "PARLEY_FAKE_SLEEP", "PARLEY_FAKE_PIDFILE"):
        os.environ.pop(k, None)
    os.environ.update(env or {})


class StatusSpy:
    """Records what the add-on writes to the status bar (it calls
    ``context.workspace.status_text_set`` through modal_ui.status, kept as is)."""

    def __init__(self) -> None:
        self.mod = addon_mod("modal_ui")
        self.orig = self.mod.status
        self.texts: list[str | None] = []

    def __enter__(self) -> StatusSpy:
        def spy(context: Any, text: str | None) -> None:
            self.orig(context, text)
            if not self.texts or self.texts[-1] != text:
                self.texts.append(text)

        self.mod.status = spy
        return self

    def __exit__(self, *exc: object) -> None:
        self.mod.status = self.orig


class EngineSpy:
    """Keeps a copy of the engine's output file just before the bake consumes it."""

    def __init__(self) -> None:
        self.bake = addon_mod("bake")
        self.orig = self.bake.bake
        self.copies: list[str] = []

    def __enter__(self) -> EngineSpy:
        def spy(scene: Any, obj: Any, pc2: str, opts: Any, frames: Any = None) -> Any:
            ref = os.path.join(CFG["work"], f"engine_out_{len(self.copies)}_{os.path.basename(pc2)}")
            shutil.copyfile(pc2, ref)
            self.copies.append(ref)
            return self.orig(scene, obj, pc2, opts, frames)

        self.bake.bake = spy
        return self

    def __exit__(self, *exc: object) -> None:
        self.bake.bake = self.orig


def engine_pid() -> int | None:
    for s in addon_mod("operators")._ACTIVE:
        if s.job is not None and s.job._proc is not None:
            return int(s.job._proc.pid)
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for the user
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def files_under(folder: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs) \
        if os.path.isdir(folder) else []


def parley_tmpdirs() -> set[str]:
    import tempfile

    t = tempfile.gettempdir()
    return {d for d in os.listdir(t) if d.startswith("parley_")}


def status_bar_crop(path: str) -> np.ndarray:
    """Pixels of the status bar (the bottom rows of the window) from a screenshot."""
    img = bpy.data.images.load(path, check_existing=False)
    try:
        w, h = img.size
        px = np.empty(w * h * 4, np.float32)
        img.pixels.foreach_get(px)
    finally:
        bpy.data.images.remove(img)
    return px.reshape(h, w, 4)[:24, :, :3]  # image rows start at the bottom


# ------------------------------------------------------------------------------ scenarios
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
    with bpy.context.temp_override(**view3d()):
        make_head()
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(CFG["scenes"], "base.blend"))
        bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2)
    bpy.context.view_layer.objects.active.name = "WrongMesh"
    with bpy.context.temp_override(**view3d()):
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(CFG["scenes"], "wrong.blend"))
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(CFG["scenes"], "other.blend"))
    yield from open_scene("base")
    yield from ensure_parley_tab()
    return f"installed into {installed}; enabled; Blender {bpy.app.version_string}"


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
    if shots:
        screenshot("panel_before")
    clear_reports()
    with StatusSpy() as st, EngineSpy() as spy:
        t0 = time.monotonic()
        res = click("parley.generate")
        expect(res == {"RUNNING_MODAL"}, f"the click returned {res}: {reports()}")
        pid = engine_pid()
        expect(pid is not None and pid_alive(pid), "no engine process after the click")
        shot_mid = None
        status_pixels = []
        while running():
            expect(time.monotonic() - t0 < CFG["timeout"], "the bake did not finish")
            if shots and shot_mid is None and time.monotonic() - t0 > 1.0:
                shot_mid = screenshot("panel_during")
                status_pixels.append(status_bar_crop(shot_mid))
            yield 0.1
        seconds = time.monotonic() - t0
    new = reports()
    expect(any("baked" in r for r in new), f"no success report; reports: {new}")
    expect(not any("Traceback" in r or "Error" in r for r in new), f"error reports: {new}")
    expect(not pid_alive(pid), f"engine pid {pid} still alive after the bake")
    progress = [t for t in st.texts if t]
    expect(len(progress) >= 2 and progress[0] != progress[-1], f"status bar did not change: {st.texts}")
    expect(st.texts[-1] is None, f"status bar not cleared at the end: {st.texts[-1]!r}")
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


def _check_stopped(run: dict[str, Any], what: str) -> str:
    expect(not pid_alive(run["pid"]), f"engine pid {run['pid']} survived {what}")
    expect(not running(), f"the progress UI is still open after {what}")
    left = parley_tmpdirs() - run["tmp_before"]
    expect(not left, f"temporary folders left after {what}: {left}")
    cache = os.path.join(CFG["scenes"], "parley_cache")
    return f"pid {run['pid']} gone, no temp folder, cache folder {files_under(cache) or 'empty'}"


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
    msg = _check_stopped(run, "Esc")
    expect(files_under(cache) == cache_before, f"cache folder changed: {files_under(cache)}")
    after = suite.snapshot()
    expect(after == run["before"], f"scene changed: {suite.diff(run['before'], after)}")
    new = reports()
    expect(any("cancelled" in r for r in new), f"no cancel report: {new}")
    expect(st.texts[-1] is None, f"status bar not cleared: {st.texts}")
    return f"{msg}; reports {new}; status texts {st.texts}"


@scenario
def load_blend_mid_run_cancels() -> Generator[float, None, str]:
    base = os.path.join(CFG["scenes"], "base.blend")
    mtime = os.path.getmtime(base)
    run = yield from _start_slow_run("load")
    with bpy.context.temp_override(**view3d()):
        bpy.ops.wm.open_mainfile(filepath=os.path.join(CFG["scenes"], "other.blend"))
    yield 0.5
    yield from wait_until(lambda: not pid_alive(run["pid"]), 10, "the engine to be killed")
    msg = _check_stopped(run, "loading another .blend")
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
    msg = _check_stopped(run, "disabling the add-on")
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
    combos = list(itertools.product(["DEFAULT", "FILE"], ["FILE", "STRIP"], ["NONE", "OBJECT", "FILE"],
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


# ------------------------------------------------------------------------------ runner
def _runner() -> Generator[float, None, None]:
    names = CFG.get("only") or list(SCENARIOS)
    for name in names:
        print(f"=== BEGIN {name}", flush=True)
        t0 = time.monotonic()
        gen = SCENARIOS[name]()
        try:
            wait = next(gen)
            while True:
                yield wait
                wait = gen.send(None)
        except StopIteration as stop:
            RESULTS[name] = {"ok": True, "detail": str(stop.value)}
        except Exception:
            RESULTS[name] = {"ok": False, "detail": traceback.format_exc()}
            if addon_mod_safe():
                try:
                    sys.modules[f"{MODULE}"].stop_everything()
                except Exception:
                    pass
        RESULTS[name]["seconds"] = round(time.monotonic() - t0, 2)
        print(f"=== END {name} ok={RESULTS[name]['ok']}", flush=True)
        _write()
        if name == "install_legacy_zip" and not RESULTS[name]["ok"]:
            break


def addon_mod_safe() -> bool:
    return MODULE in sys.modules


def _write() -> None:
    with open(CFG["results"], "w") as fh:
        json.dump(RESULTS, fh, indent=1)


_GEN: Generator[float, None, None] | None = None


def _tick() -> float | None:
    global _GEN
    try:
        if _GEN is None:
            _GEN = _runner()
        return max(0.01, float(next(_GEN)))
    except StopIteration:
        pass
    except Exception:
        RESULTS["_driver"] = {"ok": False, "detail": traceback.format_exc()}
    _finish()
    return None


def _finish() -> None:
    RESULTS["_blender"] = bpy.app.version_string
    if MODULE in bpy.context.preferences.addons:
        addon_utils.disable(MODULE, default_set=True)  # no engine, timer or handler outlives the run
    _write()
    print("=== DRIVER DONE", flush=True)
    with bpy.context.temp_override(**view3d()):
        bpy.ops.wm.quit_blender()


def main() -> None:
    argv = sys.argv[sys.argv.index("--") + 1:]
    with open(argv[0]) as fh:
        CFG.update(json.load(fh))
    CFG["results"] = argv[1]
    os.makedirs(CFG["shots"], exist_ok=True)
    suite.CFG.update({"repo": CFG["repo"], "work": CFG["work"]})
    bpy.app.timers.register(_tick, first_interval=1.0, persistent=True)


main()

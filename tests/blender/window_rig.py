"""The rig of the real-window suite: Blender window helpers and the scenario runner.

Scenarios (window_scenarios*.py) are generators registered with :func:`scenario`; each
``yield``s the seconds to wait so Blender keeps processing events between steps. See
window_driver.py for how Blender is started and tests/test_addon_window.py for the asserts.
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
    """Open the viewport's sidebar (the tab itself: :func:`ensure_parley_tab`)."""
    view3d()["area"].spaces.active.show_region_ui = True


def ensure_parley_tab() -> Iterator[float]:
    """Blender 3.x cannot select a sidebar tab from Python: click down the tab column at the
    sidebar's right edge, as a user does, until the Parley panel draws."""
    ov = view3d()
    ui = next(r for r in ov["area"].regions if r.type == "UI")
    win = ov["window"]
    n0 = _DRAWS["n"]
    ui.tag_redraw()
    yield 0.3
    if _DRAWS["n"] > n0 or not bpy.app.use_event_simulate:  # without simulated events (the bench) no tab clicks
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
    strips_ops = addon_mod("operators_strips")
    if not hasattr(strips_ops, "_orig_shared"):
        strips_ops._orig_shared = strips_ops.shared_request_settings

    def shared(context: Any) -> dict[str, Any]:
        d = strips_ops._orig_shared(context)
        if kind == "fake":
            d["engine_entry"] = (CFG["fake_engine"],)
        return d

    strips_ops.shared_request_settings = shared
    for k in ("PARLEY_FAKE_FAIL", "PARLEY_FAKE_CRASH", "PARLEY_FAKE_SLEEP", "PARLEY_FAKE_PIDFILE"):
        os.environ.pop(k, None)
    os.environ.update(env or {})


class StatusSpy:
    """Records what the add-on writes to the status bar (it calls
    ``context.workspace.status_text_set`` through modal_ui.status, kept as is)."""

    def __init__(self) -> None:
        self.mod = addon_mod("modal_ui")
        self.orig = self.mod.status
        self.texts: list[str | None] = []  # what the bar showed, in order (repeats folded)
        self.calls = 0
        self.repeats = 0  # writes of the text already shown: each one is a redraw for nothing

    def __enter__(self) -> StatusSpy:
        def spy(context: Any, text: str | None) -> None:
            self.orig(context, text)
            self.calls += 1
            if not self.texts or self.texts[-1] != text:
                self.texts.append(text)
            else:
                self.repeats += 1

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
    """The engine process of the running Generate (the warm engine's, or a one-shot child's)."""
    for s in addon_mod("operators")._ACTIVE:
        if s.job is not None and s.job.pid is not None:
            return int(s.job.pid)
    return None


def warm_pid() -> int | None:
    """The add-on's warm engine process, if one is running."""
    eng = addon_mod("warm_engine").current()
    return eng.pid if eng is not None and eng.alive else None


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

"""Preferences buttons: Check Engine, and Install Engine Dependencies (pip in a child process).

The installer runs ``pip install --target <the add-on's deps folder>`` (see
:func:`preferences.build_pip_command`) in a child process whose output is pumped into a log
by a thread; in a window a modal timer shows the last pip line in the status bar and Esc
stops pip. ``execute`` (scripts, background mode) waits for it instead.
"""
from __future__ import annotations

import os
import subprocess
import threading
from typing import TYPE_CHECKING

import bpy

from . import modal_ui, preferences
from .session import PROBES

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems as Ret
else:
    Ret = str


class PARLEY_OT_check_engine(bpy.types.Operator):
    """Check that the engine's Python can import torch and the Parley engine, and list devices"""

    bl_idname = "parley.check_engine"
    bl_label = "Check Engine"

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        prefs = preferences.get_prefs(context)
        python = preferences.interpreter(prefs)
        info = PROBES.probe(python, preferences.engine_root(), preferences.engine_paths(prefs))
        if info.get("ok"):
            self.report({"INFO"}, f"Parley engine OK: torch {info.get('torch')}, "
                                  f"CUDA {'available' if info.get('cuda') else 'not available'}")
            return {"FINISHED"}
        self.report({"ERROR"}, f"The engine cannot run in {os.path.basename(python)}: {info.get('error')}")
        return {"CANCELLED"}


class DepsInstaller:
    """pip into the add-on's deps folder in a child process, output appended to a log."""

    def __init__(self, cmd: list[str], log_path: str):
        self.cmd = cmd
        self.log_path = log_path
        self.lines = 0
        self.last = ""
        self.returncode: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Raises OSError when the interpreter cannot be started (nothing is left running)."""
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self._proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      stdin=subprocess.DEVNULL, encoding="utf-8", errors="replace")
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write("$ " + " ".join(self.cmd) + "\n")
            for line in self._proc.stdout:
                log.write(line)
                log.flush()
                self.lines += 1
                if line.strip():
                    self.last = line.strip()
            self.returncode = self._proc.wait()
            log.write(f"[exit code {self.returncode}]\n")

    @property
    def finished(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()


_JOBS: set[DepsInstaller] = set()  # killed on unregister


class PARLEY_OT_install_deps(bpy.types.Operator):
    """Install torch and the engine's other dependencies into a folder owned by this add-on
    (never into Blender's own Python); needs internet access"""

    bl_idname = "parley.install_deps"
    bl_label = "Install Engine Dependencies"

    _job: DepsInstaller | None = None
    _ui: modal_ui.ModalUI | None = None

    def _make_job(self, context: bpy.types.Context) -> DepsInstaller:
        prefs = preferences.get_prefs(context)
        cmd = preferences.build_pip_command(
            preferences.interpreter(None), preferences.deps_dir(create=True),
            preferences.engine_requirements(), getattr(prefs, "pip_extra_args", ""))
        return DepsInstaller(cmd, preferences.install_log_path())

    def _done(self, job: DepsInstaller) -> set[Ret]:
        _JOBS.discard(job)
        PROBES.results.clear()
        if job.returncode == 0:
            self.report({"INFO"}, "Parley: engine dependencies installed; use Check Engine to verify")
            return {"FINISHED"}
        what = "stopped" if job.returncode is not None and job.returncode < 0 else f"failed ({job.last[:80]})"
        self.report({"ERROR"}, f"Parley: pip {what}; see {os.path.basename(job.log_path)} in the add-on's "
                               "config folder")
        return {"CANCELLED"}

    def _start(self, context: bpy.types.Context) -> DepsInstaller | None:
        try:
            job = self._make_job(context)
            job.start()
        except (OSError, ValueError) as exc:
            self.report({"ERROR"}, f"Parley: could not start pip: {exc}")
            return None
        _JOBS.add(job)
        return job

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        job = self._start(context)
        if job is None:
            return {"CANCELLED"}
        job.wait()
        return self._done(job)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[Ret]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        job = self._start(context)
        if job is None:
            return {"CANCELLED"}
        ui = modal_ui.ModalUI("Parley install", interval=0.25, progress=False)
        try:
            ui.begin(context)
        except Exception as exc:
            job.kill()
            _JOBS.discard(job)
            self.report({"ERROR"}, f"Parley: {exc}")
            return {"CANCELLED"}
        self._job, self._ui = job, ui
        wm = context.window_manager
        assert wm is not None
        wm.modal_handler_add(self)  # last: nothing may raise after this
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[Ret]:
        job, ui = self._job, self._ui
        if job is None or ui is None:
            return {"CANCELLED"}
        try:
            if event.type == "ESC" and event.value == "PRESS":
                job.kill()
            if event.type != "TIMER":
                return {"PASS_THROUGH"}
            ui.update(context, (job.last or "running pip")[:100])
            if not job.finished:
                return {"PASS_THROUGH"}
            ui.end(context)
            return self._done(job)
        except Exception as exc:  # never leave a timer behind
            job.kill()
            ui.end(context)
            self.report({"ERROR"}, f"Parley install: {exc}")
            return {"CANCELLED"}

    def cancel(self, context: bpy.types.Context) -> None:  # window closed / file loaded
        if self._job is not None:
            self._job.kill()
            _JOBS.discard(self._job)
        if self._ui is not None:
            self._ui.end(context)


def kill_all() -> None:
    for job in list(_JOBS):
        job.kill()
    _JOBS.clear()


classes = (PARLEY_OT_check_engine, PARLEY_OT_install_deps)

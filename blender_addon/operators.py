"""Operators: Generate from Audio (modal, Esc cancels), Check engine, Install engine dependencies.

The modal operator only schedules work: a window-manager timer polls the engine child
process (:class:`session.GenerateSession`) and updates the status bar; when the engine
succeeds the bake runs in one step. ``execute`` (scripts, background mode where modal
operators never run) drives the same session synchronously.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from typing import TYPE_CHECKING, Any

import bpy
import numpy as np

from . import bake, engine_process, formats, preferences
from .session import PROBES, GenerateError, GenerateRequest, GenerateSession

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems as Ret
else:
    Ret = str

_ACTIVE: set[GenerateSession] = set()  # killed on unregister so no engine outlives the add-on


def scene_of(context: bpy.types.Context) -> bpy.types.Scene:
    scene = context.scene
    assert scene is not None, "no scene in this context"
    return scene


def _settings(context: bpy.types.Context) -> Any:
    return getattr(scene_of(context), "parley")  # noqa: B009  (registered at runtime, unknown to the stubs)


def _wm(context: bpy.types.Context) -> bpy.types.WindowManager:
    wm = context.window_manager
    assert wm is not None
    return wm


def _status(context: bpy.types.Context, text: str | None) -> None:
    if context.workspace is not None:
        _status(context, text)


def active_sound_strip(scene: bpy.types.Scene) -> Any:
    se = scene.sequence_editor
    strip = se.active_strip if se is not None else None
    if strip is None or strip.type != "SOUND" or getattr(strip, "sound", None) is None:
        return None
    return strip


def checkpoint_path(context: bpy.types.Context) -> str | None:
    s = _settings(context)
    if s.checkpoint_source == "FILE":
        return bpy.path.abspath(s.checkpoint_path) if s.checkpoint_path else None
    from .session import default_checkpoint

    return default_checkpoint(preferences.engine_root())


_INFO_CACHE: dict[tuple[str, float], formats.CheckpointInfo | str] = {}


def checkpoint_info(path: str | None) -> formats.CheckpointInfo | str:
    """Header of the checkpoint (cached by path + mtime) or an error string for the panel."""
    if not path:
        return "No checkpoint: the bundled default is missing; choose a .safetensors file"
    try:
        key = (path, os.path.getmtime(path))
    except OSError:
        return f"Checkpoint not found: {path}"
    if key not in _INFO_CACHE:
        try:
            _INFO_CACHE[key] = formats.read_checkpoint_info(path)
        except formats.FormatError as exc:
            _INFO_CACHE[key] = str(exc)
    return _INFO_CACHE[key]


def problems(context: bpy.types.Context) -> list[str]:
    """Reasons the Generate button cannot work right now (empty = ready)."""
    out: list[str] = []
    s = _settings(context)
    obj = context.active_object
    if obj is None or obj.type != "MESH":
        out.append("Select the face mesh to animate")
    info = checkpoint_info(checkpoint_path(context))
    if isinstance(info, str):
        out.append(info)
    elif obj is not None and obj.type == "MESH":
        try:
            bake.check_topology(obj, info)
        except bake.TopologyError as exc:
            out.append(str(exc))
    if s.audio_source == "FILE":
        if not s.audio_path:
            out.append("Choose an audio file")
        elif not os.path.isfile(bpy.path.abspath(s.audio_path)):
            out.append("Audio file not found")
    elif active_sound_strip(scene_of(context)) is None:
        out.append("No active sound strip in the sequencer")
    if s.style_source == "OBJECT":
        if s.style_object is None:
            out.append("Choose the style object")
        elif bake.animation_range(s.style_object) is None:
            out.append("The style object has no mesh cache or shape-key animation")
    elif s.style_source == "FILE" and not os.path.isfile(bpy.path.abspath(s.style_path)):
        out.append("Style file not found")
    prefs = preferences.get_prefs(context)
    if s.bake_mode == "CACHE":
        cache_dir = getattr(prefs, "cache_dir", "//parley_cache") or "//parley_cache"
        if cache_dir.startswith("//") and not bpy.data.filepath:
            out.append("Save the .blend first (the mesh cache is written next to it)")
    return out


def request_from_context(context: bpy.types.Context) -> GenerateRequest:
    """Panel settings + preferences → a request; raises GenerateError with the first problem."""
    issues = problems(context)
    if issues:
        raise GenerateError(issues[0])
    s = _settings(context)
    scene = scene_of(context)
    prefs = preferences.get_prefs(context)
    obj = context.active_object
    assert obj is not None
    start = int(s.start_frame)
    add_strip = bool(s.add_sound_strip)
    if s.audio_source == "STRIP":
        strip = active_sound_strip(scene)
        audio = bpy.path.abspath(strip.sound.filepath, library=strip.sound.library)
        start = int(strip.frame_start)
        add_strip = False  # the sound is already in the sequencer
    else:
        audio = bpy.path.abspath(s.audio_path)
    device = s.device if s.device != "PREFS" else getattr(prefs, "default_device", "AUTO")
    info = checkpoint_info(checkpoint_path(context))
    fps = None
    if s.fps_source == "CHECKPOINT" and isinstance(info, formats.CheckpointInfo):
        fps = info.fps
    style = style_file(context)
    return GenerateRequest(
        object_name=obj.name, audio_path=audio, checkpoint=checkpoint_path(context),
        python=preferences.interpreter(prefs), engine_root=preferences.engine_root(),
        extra_paths=preferences.engine_paths(prefs), device=device.lower(), mode=s.bake_mode,
        start_frame=start, fps=fps, relative_keys=bool(s.relative_keys), add_sound_strip=add_strip,
        set_frame_range=bool(s.set_frame_range), set_scene_fps=s.fps_source == "CHECKPOINT",
        use_object_template=bool(s.use_object_template), style_path=style,
        cache_dir=getattr(prefs, "cache_dir", "") or "//parley_cache",
        temp_files=[style] if style and os.path.basename(style).startswith("parley_style_") else [])


def style_file(context: bpy.types.Context) -> str | None:
    """Path for ``--style``: a file, a style object's PC2 cache, or its shape-key animation
    sampled to a temporary .npy (the scene's current frame is restored)."""
    s = _settings(context)
    if s.style_source == "FILE":
        return bpy.path.abspath(s.style_path)
    if s.style_source != "OBJECT" or s.style_object is None:
        return None
    obj = s.style_object
    for mod in obj.modifiers:
        if mod.type == "MESH_CACHE" and getattr(mod, "cache_format", "") == "PC2":
            return bpy.path.abspath(mod.filepath)  # type: ignore[attr-defined]
    rng = bake.animation_range(obj)
    if rng is None:
        return None
    frames = bake.sample_animation(scene_of(context), obj, rng[0], rng[1])
    fd, path = tempfile.mkstemp(prefix="parley_style_", suffix=".npy")
    os.close(fd)
    np.save(path, frames.astype(np.float32))
    return path


def _report_result(op: bpy.types.Operator, r: bake.BakeResult) -> None:
    where = r.modifier or r.action or ""
    op.report({"INFO"}, f"Parley: baked '{r.clip}' ({r.frames} frames from frame {r.start_frame}) as {where}")


class PARLEY_OT_generate(bpy.types.Operator):
    """Animate the active mesh from speech audio (Esc cancels)"""

    bl_idname = "parley.generate"
    bl_label = "Generate from Audio"
    bl_options = {"REGISTER", "UNDO"}

    _session: GenerateSession | None = None
    _timer: Any = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        return obj is not None and obj.type == "MESH" and hasattr(context.scene, "parley")

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        try:
            session = GenerateSession(scene_of(context), request_from_context(context))
            _ACTIVE.add(session)
            try:
                result = session.run()
            finally:
                _ACTIVE.discard(session)
        except (GenerateError, bake.BakeError, engine_process.EngineError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _report_result(self, result)
        return {"FINISHED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[Ret]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        try:
            self._session = GenerateSession(scene_of(context), request_from_context(context))
            self._session.start()
        except (GenerateError, bake.BakeError, engine_process.EngineError) as exc:
            if self._session is not None:
                self._session.cancel()
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _ACTIVE.add(self._session)
        wm = _wm(context)
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        _status(context, "Parley: starting the engine… (Esc cancels)")
        return {"RUNNING_MODAL"}

    def _end_ui(self, context: bpy.types.Context) -> None:
        wm = _wm(context)
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        _status(context, None)
        if self._session is not None:
            _ACTIVE.discard(self._session)

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[Ret]:
        session = self._session
        assert session is not None
        if event.type == "ESC" and event.value == "PRESS":
            session.cancel()
            self._end_ui(context)
            self.report({"WARNING"}, "Parley: cancelled; the scene was not changed")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        st = session.poll()
        pct = int(round(st.fraction * 100))
        _wm(context).progress_update(pct)
        _status(context, f"Parley: {st.stage} {pct}% (Esc cancels)")
        if not st.finished:
            return {"PASS_THROUGH"}
        self._end_ui(context)
        try:
            result = session.finish()
        except (GenerateError, bake.BakeError) as exc:
            self.report({"ERROR"}, f"Parley: {exc}")
            return {"CANCELLED"}
        _report_result(self, result)
        return {"FINISHED"}

    def cancel(self, context: bpy.types.Context) -> None:  # window closed / file loaded
        if self._session is not None:
            self._session.cancel()
        self._end_ui(context)


class PARLEY_OT_check_engine(bpy.types.Operator):
    """Check that the engine's Python can import torch and the Parley engine, and list devices"""

    bl_idname = "parley.check_engine"
    bl_label = "Check Engine"

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        prefs = preferences.get_prefs(context)
        python = preferences.interpreter(prefs)
        info = PROBES.probe(python, preferences.engine_root(), preferences.engine_paths(prefs))
        if info.get("ok"):
            self.report({"INFO"}, f"Parley engine OK in {python}: torch {info.get('torch')}, "
                                  f"CUDA {'available' if info.get('cuda') else 'not available'}")
            return {"FINISHED"}
        self.report({"ERROR"}, f"The engine cannot run in {python}: {info.get('error')}")
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

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()


class PARLEY_OT_install_deps(bpy.types.Operator):
    """Install torch and the engine's other dependencies into a folder owned by this add-on
    (never into Blender's own Python); needs internet access"""

    bl_idname = "parley.install_deps"
    bl_label = "Install Engine Dependencies"

    _job: DepsInstaller | None = None
    _timer: Any = None

    def _make_job(self, context: bpy.types.Context) -> DepsInstaller:
        prefs = preferences.get_prefs(context)
        cmd = preferences.build_pip_command(
            preferences.interpreter(None), preferences.deps_dir(create=True),
            preferences.engine_requirements(), getattr(prefs, "pip_extra_args", ""))
        return DepsInstaller(cmd, preferences.install_log_path())

    def _done(self, job: DepsInstaller) -> set[Ret]:
        PROBES.results.clear()
        if job.returncode == 0:
            self.report({"INFO"}, "Parley: engine dependencies installed; use Check Engine to verify")
            return {"FINISHED"}
        self.report({"ERROR"}, f"Parley: pip failed ({job.last}); see {job.log_path}")
        return {"CANCELLED"}

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        job = self._make_job(context)
        job.start()
        assert job._thread is not None
        job._thread.join()
        return self._done(job)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[Ret]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        self._job = self._make_job(context)
        self._job.start()
        wm = _wm(context)
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[Ret]:
        job = self._job
        assert job is not None
        if event.type == "ESC" and event.value == "PRESS":
            job.kill()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        _status(context, f"Parley install: {job.last[:100]} (Esc stops)")
        if not job.finished:
            return {"PASS_THROUGH"}
        _wm(context).event_timer_remove(self._timer)
        _status(context, None)
        return self._done(job)


def kill_all() -> None:
    for s in list(_ACTIVE):
        s.cancel()
    _ACTIVE.clear()


classes = (PARLEY_OT_generate, PARLEY_OT_check_engine, PARLEY_OT_install_deps)

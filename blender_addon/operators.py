"""Generate from Audio: the panel's settings → a :class:`session.GenerateSession`.

The modal operator only schedules work: a window-manager timer polls the engine child
process and updates the status bar (:mod:`modal_ui`); when the engine succeeds the bake runs
in one step. ``execute`` (scripts, background mode where modal operators never run) drives
the same session synchronously. Every failure becomes one readable report (no traceback).
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import TYPE_CHECKING, Any

import bpy
import numpy as np

from . import bake, character_session, engine_process, formats, modal_ui, preferences, warm_engine
from .session import GenerateError, GenerateRequest, GenerateSession, describe_progress

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
    if s.checkpoint_source == "SHIPPED":
        from . import checkpoints

        return checkpoints.path_of(s.shipped_checkpoint)
    from .session import default_checkpoint

    return default_checkpoint(preferences.engine_root())


_INFO_CACHE: dict[tuple[str, float], formats.CheckpointInfo | str] = {}


MISSING_CHECKPOINT = {
    "DEFAULT": "The bundled model is missing: reinstall the add-on or choose a .safetensors file",
    "SHIPPED": "No shipped model found in the engine's assets folder",
    "FILE": "Choose a .safetensors checkpoint file",
}


def context_checkpoint_info(context: bpy.types.Context) -> formats.CheckpointInfo | str:
    """Header of the checkpoint the panel's settings select, or why there is none."""
    path = checkpoint_path(context)
    if not path:
        return MISSING_CHECKPOINT.get(_settings(context).checkpoint_source, MISSING_CHECKPOINT["FILE"])
    return checkpoint_info(path)


def checkpoint_info(path: str | None) -> formats.CheckpointInfo | str:
    """Header of the checkpoint (cached by path + mtime) or an error string for the panel."""
    if not path:
        return "No checkpoint: the bundled default is missing; choose a .safetensors file"
    try:
        key = (path, os.path.getmtime(path))
    except OSError:
        return f"Checkpoint not found: {os.path.basename(path)}"
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
        out.append("Select the face mesh to animate, or add one: Add > Mesh > Parley Head")
    info = context_checkpoint_info(context)
    if isinstance(info, str):
        out.append(info)
    elif obj is not None and obj.type == "MESH" and not character_session.retargets(scene_of(context), obj, info):
        try:
            bake.check_topology(obj, info)
        except bake.TopologyError as exc:
            out.append(str(exc))
    out += character_session.problems(scene_of(context), obj, info)  # any character: fit, shape keys
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
    if s.bake_mode == "CACHE" and not character_session.shape_target(scene_of(context)):
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
    style = style_file(context)
    return character_session.wrap_request(context, GenerateRequest(
        object_name=obj.name, audio_path=audio, start_frame=start, add_sound_strip=add_strip,
        set_frame_range=bool(s.set_frame_range), style_path=style,
        temp_files=[style] if style and os.path.basename(style).startswith("parley_style_") else [],
        **shared_request_settings(context)))


def shared_request_settings(context: bpy.types.Context) -> dict[str, Any]:
    """The request fields every line shares (model, engine, device, bake mode, fps, cache)."""
    s = _settings(context)
    prefs = preferences.get_prefs(context)
    device = s.device if s.device != "PREFS" else getattr(prefs, "default_device", "AUTO")
    info = context_checkpoint_info(context)
    fps = info.fps if s.fps_source == "CHECKPOINT" and isinstance(info, formats.CheckpointInfo) else None
    return dict(
        checkpoint=checkpoint_path(context), python=preferences.interpreter(prefs),
        engine_root=preferences.engine_root(), extra_paths=preferences.engine_paths(prefs),
        warm=preferences.warm(prefs),
        device=device.lower(), mode=s.bake_mode, fps=fps, relative_keys=bool(s.relative_keys),
        set_scene_fps=s.fps_source == "CHECKPOINT", use_object_template=bool(s.use_object_template),
        cache_dir=getattr(prefs, "cache_dir", "") or "//parley_cache",
        postprocess=None if s.close_lips else "none", use_transcript=bool(s.use_transcript))


def start_warm_engine(context: bpy.types.Context) -> warm_engine.WarmEngine:
    """Start the warm engine now (add-on enable) with the model the panel would use, so the
    first click finds it loaded; returns at once."""
    prefs = preferences.get_prefs(context)
    scene = context.scene
    ckpt = checkpoint_path(context) if scene is not None and hasattr(scene, "parley") else None
    from .session import default_checkpoint

    ckpt = ckpt or default_checkpoint(preferences.engine_root())
    env = engine_process.engine_env(preferences.engine_root(), preferences.engine_paths(prefs))
    device = str(getattr(prefs, "default_device", "AUTO")).lower()
    return warm_engine.start(preferences.interpreter(prefs), ("-m", "engine"), env, ckpt, device)


def report_notice(op: bpy.types.Operator) -> None:
    """Say once that the warm engine had stopped since the last run (and was restarted)."""
    notice = warm_engine.take_notice()
    if notice:
        op.report({"WARNING"}, f"Parley: {short_paths(notice)}")


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


USER_ERRORS = (GenerateError, bake.BakeError, engine_process.EngineError, formats.FormatError, OSError)
_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(]))(?:[A-Za-z]:)?[\\/][^\s:'\"()]*[\\/]([^\s\\/:'\"()]+)")


def short_paths(text: str) -> str:
    """Absolute paths → file names: a report or panel line must fit the panel."""
    return _PATH.sub(lambda m: m.group(1), text)


def user_message(exc: BaseException) -> str:
    """One readable line for ``self.report``; unexpected errors keep their traceback in the
    system console only."""
    if isinstance(exc, USER_ERRORS):
        return "Parley: " + short_paths(str(exc)).removeprefix("Parley: ")
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__)
    return f"Parley: unexpected {type(exc).__name__}: {short_paths(str(exc))} (details in the system console)"


def _report_result(op: bpy.types.Operator, r: bake.BakeResult) -> None:
    where = r.modifier or r.action or ""
    note = getattr(r, "note", "")  # any character: which retarget path, how many keys
    text = f"Parley: baked '{r.clip}' ({r.frames} frames from frame {r.start_frame}) as {where}{note}"
    if r.warnings:   # still baked, but the user should know (e.g. their transcript was not used)
        op.report({"WARNING"}, f"{text}; {short_paths('; '.join(r.warnings))}")
    else:
        op.report({"INFO"}, text)


class PARLEY_OT_generate(bpy.types.Operator):
    """Animate the active mesh from speech audio (Esc cancels)"""

    bl_idname = "parley.generate"
    bl_label = "Generate from Audio"
    bl_options = {"REGISTER", "UNDO"}

    _session: GenerateSession | None = None
    _ui: modal_ui.ModalUI | None = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        return obj is not None and obj.type == "MESH" and hasattr(context.scene, "parley")

    def new_session(self, context: bpy.types.Context) -> Any:
        """The run behind this button (the Fit button borrows this operator's methods: same child
        process, progress, Esc and cleanup)."""
        return character_session.new_session(scene_of(context), request_from_context(context))

    def report_done(self, result: Any) -> None:
        _report_result(self, result)

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        try:
            session = self.new_session(context)
            _ACTIVE.add(session)
            try:
                result = session.run()
            finally:
                _ACTIVE.discard(session)
        except USER_ERRORS as exc:
            report_notice(self)
            self.report({"ERROR"}, user_message(exc))
            return {"CANCELLED"}
        report_notice(self)
        self.report_done(result)
        return {"FINISHED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[Ret]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if _ACTIVE or modal_ui.current() is not None:
            self.report({"ERROR"}, "Parley is already generating: wait for it or press Esc")
            return {"CANCELLED"}
        session: GenerateSession | None = None
        ui = modal_ui.ModalUI("Parley")
        try:
            session = self.new_session(context)
            session.start()
            ui.begin(context)
        except Exception as exc:  # before modal_handler_add: clean up and report, never raise
            if session is not None:
                session.cancel()
            ui.end(context)
            report_notice(self)
            self.report({"ERROR"}, user_message(exc))
            return {"CANCELLED"}
        self._session, self._ui = session, ui
        _ACTIVE.add(session)
        _wm(context).modal_handler_add(self)  # last: nothing may raise after this
        return {"RUNNING_MODAL"}

    def _stop(self, context: bpy.types.Context, cancel_engine: bool) -> None:
        if self._session is not None:
            if cancel_engine:
                self._session.cancel()
            _ACTIVE.discard(self._session)
        if self._ui is not None:
            self._ui.end(context)

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[Ret]:
        session, ui = self._session, self._ui
        if session is None or ui is None:
            return {"CANCELLED"}
        try:
            if event.type == "ESC" and event.value == "PRESS":
                self._stop(context, cancel_engine=True)
                self.report({"WARNING"}, "Parley: cancelled; the scene was not changed")
                return {"CANCELLED"}
            if event.type != "TIMER":
                return {"PASS_THROUGH"}
            st = session.poll()
            text, overall = describe_progress(st.stage, st.fraction)
            ui.update(context, text, overall)
            if not st.finished:
                return {"PASS_THROUGH"}
            self._stop(context, cancel_engine=False)
            result = session.finish()
        except Exception as exc:  # one readable report; the timer and engine never outlive this
            self._stop(context, cancel_engine=True)
            report_notice(self)
            self.report({"ERROR"}, user_message(exc))
            return {"CANCELLED"}
        report_notice(self)
        self.report_done(result)
        return {"FINISHED"}

    def cancel(self, context: bpy.types.Context) -> None:  # window closed / another file loaded
        self._stop(context, cancel_engine=True)


def kill_all() -> None:
    for s in list(_ACTIVE):
        s.cancel()
    _ACTIVE.clear()


classes = (PARLEY_OT_generate,)

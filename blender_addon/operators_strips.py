"""Generate for all strips (modal, Esc cancels the rest) and the character table's +/- buttons."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import bpy

from . import modal_ui, strips
from .operators import (USER_ERRORS, _settings, report_notice, scene_of, shared_request_settings, short_paths,
                        user_message)
from .session import GenerateRequest

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems as Ret
else:
    Ret = str

_RUNS: set[strips.StripsRun] = set()  # cancelled on unregister / file load


def build_run(context: bpy.types.Context) -> strips.StripsRun:
    s = _settings(context)
    scene = scene_of(context)
    p = strips.plan(scene, s.strip_rule, strips.table_of(s), bool(s.strips_selected_only))
    shared = shared_request_settings(context)

    def make_request(line: strips.Line) -> GenerateRequest:
        return GenerateRequest(object_name=line.object_name, audio_path=line.audio, start_frame=line.start_frame,
                               add_sound_strip=False, set_frame_range=False, clip=line.strip, **shared)

    run = strips.StripsRun(scene, p.lines, make_request)
    run.prepare_all()
    return run


class PARLEY_OT_generate_strips(bpy.types.Operator):
    """Bake every sound strip (or the selected ones) onto its character at the strip's frame; one undo
    step; Esc cancels the remaining lines (lines already baked stay, nothing is half-baked)"""

    bl_idname = "parley.generate_strips"
    bl_label = "Generate for All Strips"
    bl_options = {"REGISTER", "UNDO"}

    _run: strips.StripsRun | None = None
    _ui: modal_ui.ModalUI | None = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return hasattr(context.scene, "parley") and context.scene is not None \
            and context.scene.sequence_editor is not None

    def _finish_report(self, run: strips.StripsRun, why: str = "") -> set[Ret]:
        report_notice(self)
        if why:
            kept = (f"; {strips.summary(run)} (Ctrl+Z removes them)" if run.results else
                    "; the scene was not changed")
            self.report({"WARNING" if why == "cancelled" else "ERROR"}, f"Parley: {why}{kept}")
        elif run.warnings:
            self.report({"WARNING"}, f"Parley: {strips.summary(run)}; {short_paths('; '.join(run.warnings))}")
        else:
            self.report({"INFO"}, f"Parley: {strips.summary(run)}")
        # FINISHED whenever something was baked, so the whole run is one undo step
        return {"FINISHED"} if run.results else {"CANCELLED"}

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        try:
            run = build_run(context)
            _RUNS.add(run)
            try:
                run.run()
            finally:
                _RUNS.discard(run)
        except USER_ERRORS as exc:
            self.report({"ERROR"}, user_message(exc))
            return {"CANCELLED"}
        return self._finish_report(run)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[Ret]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if _RUNS or modal_ui.current() is not None:
            self.report({"ERROR"}, "Parley is already generating: wait for it or press Esc")
            return {"CANCELLED"}
        ui = modal_ui.ModalUI("Parley dialogue")
        run: strips.StripsRun | None = None
        try:
            run = build_run(context)
            run.step()  # starts the first engine
            ui.begin(context)
        except Exception as exc:  # before modal_handler_add: clean up and report, never raise
            if run is not None:
                run.cancel()
            ui.end(context)
            self.report({"ERROR"}, user_message(exc))
            return {"CANCELLED"}
        self._run, self._ui = run, ui
        _RUNS.add(run)
        wm = context.window_manager
        assert wm is not None
        wm.modal_handler_add(self)  # last: nothing may raise after this
        return {"RUNNING_MODAL"}

    def _stop(self, context: bpy.types.Context, keep_finished: bool = False) -> None:
        try:
            if self._run is not None:
                _RUNS.discard(self._run)
                self._run.cancel(keep_finished=keep_finished)
        finally:
            if self._ui is not None:
                self._ui.end(context)

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[Ret]:
        run, ui = self._run, self._ui
        if run is None or ui is None:
            return {"CANCELLED"}
        try:
            if event.type == "ESC" and event.value == "PRESS":  # bake the lines done, drop the rest
                self._stop(context, keep_finished=True)
                return self._finish_report(run, f"cancelled after {len(run.outputs)} of {len(run.lines)} lines")
            if event.type != "TIMER":
                return {"PASS_THROUGH"}
            prog = run.step()
            ui.update(context, prog.text, prog.fraction)
            if not run.done:
                return {"PASS_THROUGH"}
            self._stop(context)
            return self._finish_report(run)
        except Exception as exc:  # one readable report; no engine or timer outlives this
            self._stop(context)
            return self._finish_report(run, user_message(exc).removeprefix("Parley: "))

    def cancel(self, context: bpy.types.Context) -> None:  # window closed / another file loaded
        self._stop(context)


class PARLEY_OT_character_add(bpy.types.Operator):
    """Add a row to the character table (the active object, keyed by its name or the next channel)"""

    bl_idname = "parley.character_add"
    bl_label = "Add Character"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        s = _settings(context)
        row = s.characters.add()
        obj = context.active_object
        if obj is not None and obj.type == "MESH":
            row.object = obj
            row.key = str(len(s.characters)) if s.strip_rule == "CHANNEL" else obj.name
        s.characters_index = len(s.characters) - 1
        return {"FINISHED"}


class PARLEY_OT_character_remove(bpy.types.Operator):
    """Remove the selected row of the character table"""

    bl_idname = "parley.character_remove"
    bl_label = "Remove Character"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        s = _settings(context)
        if 0 <= s.characters_index < len(s.characters):
            s.characters.remove(s.characters_index)
            s.characters_index = max(0, s.characters_index - 1)
        return {"FINISHED"}


def kill_all() -> None:
    for run in list(_RUNS):
        run.cancel()
    _RUNS.clear()


def dialogue_plan(context: Any) -> strips.Plan:
    s = _settings(context)
    return strips.plan(scene_of(context), s.strip_rule, strips.table_of(s), bool(s.strips_selected_only))


classes = (PARLEY_OT_generate_strips, PARLEY_OT_character_add, PARLEY_OT_character_remove)

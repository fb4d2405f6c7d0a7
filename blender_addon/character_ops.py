"""Buttons of the "any character" part of the panel: Fit, landmarks, overlays.

*Fit* is the Generate operator with another session (:class:`character_session.FitSession`):
the same child process, status-bar progress, Esc cancel and cleanup, and Undo removes the fit.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import bpy
from bpy.props import EnumProperty

from . import character, operators, preferences
from . import character_files as cf
from .character_session import FitRequest, FitSession

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems as Ret
else:
    Ret = str


def _mesh_object(context: bpy.types.Context) -> Any:
    obj = context.active_object
    return obj if obj is not None and obj.type == "MESH" else None


_GEN = operators.PARLEY_OT_generate
_LANDMARK_ITEMS = [(n, cf.LANDMARK_LABELS[n], "") for n in cf.LANDMARKS]


class PARLEY_OT_fit(bpy.types.Operator):
    """Fit the model's template to this mesh once (any topology); stored with the object (Esc cancels)"""

    bl_idname = "parley.fit"
    bl_label = "Fit"
    bl_options = {"REGISTER", "UNDO"}

    # Generate's run machinery as is (child process, status bar, Esc, cleanup, one run at a time);
    # only the session and the report differ. Borrowed, not inherited: Blender cannot register a
    # subclass of a registered operator without losing the parent's Python class.
    _session: Any = None
    _ui: Any = None
    poll = _GEN.poll
    execute = _GEN.execute
    invoke = _GEN.invoke
    modal = _GEN.modal
    cancel = _GEN.cancel
    _stop = _GEN._stop

    def new_session(self, context: bpy.types.Context) -> Any:
        obj = _mesh_object(context)
        if obj is None:
            raise operators.GenerateError("Select the character's head mesh to fit")
        prefs = preferences.get_prefs(context)
        s = character.settings(operators.scene_of(context))
        return FitSession(operators.scene_of(context), FitRequest(
            object_name=obj.name, checkpoint=operators.checkpoint_path(context),
            python=preferences.interpreter(prefs), engine_root=preferences.engine_root(),
            extra_paths=preferences.engine_paths(prefs), up=s.up_axis, head_group=s.head_group))

    def report_done(self, result: Any) -> None:
        self.report({"INFO"}, f"Parley: fitted '{result.object_name}' (residual {result.residual:.4f} of the face "
                              f"size, landmarks {result.landmark_source}, {result.seconds:.1f} s)")
        obj = bpy.data.objects.get(result.object_name)
        if obj is not None and character.overlays(obj, "landmark"):
            character.show_landmarks(obj)  # the display follows the new fit


class PARLEY_OT_landmark_assign(bpy.types.Operator):
    """Use the selected vertex (Edit Mode) as this landmark for the next Fit"""

    bl_idname = "parley.landmark_assign"
    bl_label = "Assign Landmark"
    bl_options = {"REGISTER", "UNDO"}

    landmark: EnumProperty(items=_LANDMARK_ITEMS)  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = _mesh_object(context)
        if obj is None or obj.mode != "EDIT":
            if hasattr(cls, "poll_message_set"):  # 3.0+
                cls.poll_message_set("Select one vertex in Edit Mode")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        obj = _mesh_object(context)
        try:
            idx = character.selected_vertex(obj)
        except cf.FormatError as exc:
            self.report({"ERROR"}, f"Parley: {exc}")
            return {"CANCELLED"}
        character.set_landmark(obj, self.landmark, idx)
        if character.overlays(obj, "landmark"):
            obj.update_from_editmode()
            character.show_landmarks(obj)
        self.report({"INFO"}, f"Parley: {cf.LANDMARK_LABELS[self.landmark]} = vertex {idx}")
        return {"FINISHED"}


class PARLEY_OT_landmarks_clear(bpy.types.Operator):
    """Forget the picked landmarks (the next Fit finds them automatically)"""

    bl_idname = "parley.landmarks_clear"
    bl_label = "Clear Landmarks"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = _mesh_object(context)
        return obj is not None and character.LANDMARKS_PROP in obj

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        obj = _mesh_object(context)
        del obj[character.LANDMARKS_PROP]
        return {"FINISHED"}


class PARLEY_OT_fit_overlay(bpy.types.Operator):
    """Show or hide the landmarks or the fitted template over the character"""

    bl_idname = "parley.fit_overlay"
    bl_label = "Fit Overlay"
    bl_options = {"REGISTER", "UNDO"}

    kind: EnumProperty(items=[("landmark", "Landmarks", ""), ("preview", "Fitted template", "")])  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _mesh_object(context) is not None

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        obj = _mesh_object(context)
        if character.remove_overlays(obj, self.kind):
            return {"FINISHED"}
        mode = obj.mode
        if mode == "EDIT":
            obj.update_from_editmode()
        try:
            if self.kind == "landmark":
                if not character.show_landmarks(obj):
                    self.report({"WARNING"}, "Parley: no landmarks yet: click Fit, or assign them in Edit Mode")
                    return {"CANCELLED"}
            else:
                if character.FIT_PROP not in obj:
                    self.report({"WARNING"}, "Parley: not fitted yet: click Fit")
                    return {"CANCELLED"}
                ckpt = operators.checkpoint_path(context)
                if not ckpt:
                    self.report({"ERROR"}, "Parley: no checkpoint to read the template from")
                    return {"CANCELLED"}
                character.show_fit_preview(obj, ckpt)
        except (cf.FormatError, OSError) as exc:
            self.report({"ERROR"}, f"Parley: {operators.short_paths(str(exc))}")
            return {"CANCELLED"}
        return {"FINISHED"}


class PARLEY_OT_fit_clear(bpy.types.Operator):
    """Forget this object's fit"""

    bl_idname = "parley.fit_clear"
    bl_label = "Forget Fit"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = _mesh_object(context)
        return obj is not None and character.FIT_PROP in obj

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        obj = _mesh_object(context)
        character.clear_fit(obj)
        character.remove_overlays(obj, "preview")
        return {"FINISHED"}


classes = (PARLEY_OT_fit, PARLEY_OT_landmark_assign, PARLEY_OT_landmarks_clear, PARLEY_OT_fit_overlay,
           PARLEY_OT_fit_clear)

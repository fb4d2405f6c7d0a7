"""The "any character" rows of the Parley panel: target, fit, landmarks, weight-curve options.

Drawn inside the main panel (:mod:`panel` calls :func:`draw` under the target line) so the
Fit button sits above Generate, where it is needed first.
"""
from __future__ import annotations

import bpy

from . import character, character_session, operators
from . import character_files as cf


def draw(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    scene = operators.scene_of(context)
    if not hasattr(scene, "parley_character"):
        return
    s = character.settings(scene)
    obj = context.active_object
    if obj is None or obj.type != "MESH":
        return
    layout.prop(s, "target", expand=True)
    info = operators.checkpoint_info(operators.checkpoint_path(context))
    if not character_session.retargets(scene, obj, info):
        return
    box = layout.box()
    tfp = getattr(info, "fingerprint", None)
    st = character.fit_state(obj, tfp)
    if s.target == "SHAPEKEYS" and st.status == "none":
        box.label(text="No fit: keys with ARKit/VRM/Rhubarb names are driven by name", icon="INFO")
    elif st.status == "valid":
        box.label(text=st.message, icon="CHECKMARK")
    else:
        box.label(text=st.message, icon="ERROR" if st.status == "stale" else "INFO")
    row = box.row(align=True)
    row.scale_y = 1.2
    row.operator("parley.fit", text="Fit Again" if st.status == "valid" else "Fit", icon="MOD_SHRINKWRAP")
    row.operator("parley.fit_clear", text="", icon="X")
    row = box.row(align=True)
    row.prop(s, "up_axis", text="Up")
    row.prop_search(s, "head_group", obj, "vertex_groups", text="", icon="GROUP_VERTEX")
    row = box.row(align=True)
    row.operator("parley.fit_overlay", text="Points", icon="EMPTY_AXIS",
                 depress=bool(character.overlays(obj, "landmark"))).kind = "landmark"
    row.operator("parley.fit_overlay", text="Template", icon="MOD_WIREFRAME",
                 depress=bool(character.overlays(obj, "preview"))).kind = "preview"
    _draw_landmarks(box, s, obj)
    if s.target == "SHAPEKEYS":
        col = box.column(align=True)
        col.prop(s, "curves", expand=True)
        if s.curves == "SPARSE":
            col.prop(s, "tolerance")


def _draw_landmarks(layout: bpy.types.UILayout, s: object, obj: bpy.types.Object) -> None:
    picked = character.assigned_landmarks(obj)
    head = layout.row()
    head.prop(s, "show_landmarks", icon="TRIA_DOWN" if getattr(s, "show_landmarks") else "TRIA_RIGHT",
              emboss=False, text=f"Landmarks ({len(picked)}/{len(cf.LANDMARKS)} picked)")
    if not getattr(s, "show_landmarks"):
        return
    col = layout.column(align=True)
    if obj.mode != "EDIT":
        col.label(text="Edit Mode: pick a vertex, Assign", icon="INFO")
    for n in cf.LANDMARKS:
        row = col.row(align=True)
        row.label(text=cf.LANDMARK_SHORT[n])
        row.label(text=f"v{picked[n]}" if n in picked else "auto")
        row.operator("parley.landmark_assign", text="Assign").landmark = n
    col.operator("parley.landmarks_clear", icon="X")

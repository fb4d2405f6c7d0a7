"""The "Parley" tab in the 3D viewport sidebar."""
from __future__ import annotations

import bpy

from . import bake, character_panel, formats, modal_ui, operators, preferences
from .session import PROBES


class PARLEY_PT_generate(bpy.types.Panel):
    bl_label = "Parley: Speech to Face"
    bl_idname = "PARLEY_PT_generate"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Parley"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        assert layout is not None
        scene = operators.scene_of(context)
        s = getattr(scene, "parley")  # noqa: B009  (registered at runtime)
        obj = context.active_object
        mesh = obj.data if obj is not None else None

        box = layout.box()
        box.prop(s, "checkpoint_source")
        if s.checkpoint_source == "FILE":
            box.prop(s, "checkpoint_path", text="")
        info = operators.checkpoint_info(operators.checkpoint_path(context))
        if isinstance(info, formats.CheckpointInfo):
            col = box.column(align=True)
            col.label(text=info.summary(), icon="INFO")
            if info.fingerprint:
                col.label(text=f"Topology: {info.topology_name} {info.fingerprint}")
            card = info.data_card
            if card:
                col.label(text="Data: " + ", ".join(f"{k}={v}" for k, v in list(card.items())[:3])[:100])
        else:
            for i, chunk in enumerate(_wrap(operators.short_paths(info), 44)):
                box.label(text=chunk, icon="ERROR" if i == 0 else "BLANK1")

        if obj is None or obj.type != "MESH":
            _draw_first_steps(layout)

        col = layout.column()
        col.label(text=f"Target: {obj.name if obj else '-'}"
                       + (f" ({len(mesh.vertices):,} vertices)" if isinstance(mesh, bpy.types.Mesh) else ""),
                  icon="MESH_DATA")
        character_panel.draw(col, context)  # any character: target, Fit, landmarks, curves
        col.prop(s, "audio_source")
        if s.audio_source == "FILE":
            col.prop(s, "audio_path", text="")
        else:
            strip = operators.active_sound_strip(scene)
            col.label(text=f"Strip: {strip.name} at frame {strip.frame_start:g}" if strip else "No active sound strip")
        col.prop(s, "style_source")
        if s.style_source == "OBJECT":
            col.prop(s, "style_object", text="")
        elif s.style_source == "FILE":
            col.prop(s, "style_path", text="")
        col.prop(s, "use_object_template")

        row = col.row()
        row.prop(s, "device")
        prefs = preferences.get_prefs(context)
        probe = PROBES.get(preferences.interpreter(prefs))
        if probe is None:
            col.operator("parley.check_engine", text="Detect devices", icon="VIEWZOOM")
        elif probe.get("ok"):
            col.label(text=f"Detected: CPU{', CUDA' if probe.get('cuda') else ' (no CUDA)'}")
        else:
            col.label(text=f"Engine not usable: {probe.get('error')}", icon="ERROR")

        sub = col.row()
        sub.enabled = s.audio_source == "FILE"
        sub.prop(s, "start_frame")
        col.prop(s, "fps_source")
        col.label(text=f"Scene: {bake.scene_fps(scene):g} fps")
        col.prop(s, "bake_mode", expand=True)
        if s.bake_mode == "SHAPEKEYS":
            col.prop(s, "relative_keys")
        sub = col.row()
        sub.enabled = s.audio_source == "FILE"
        sub.prop(s, "add_sound_strip")
        col.prop(s, "set_frame_range")

        running = modal_ui.current()
        if running is not None:
            _draw_progress(layout, running)
            return
        issues = operators.problems(context)
        row = layout.row()
        row.scale_y = 1.6
        row.enabled = not issues
        row.operator("parley.generate", icon="PLAY_SOUND")
        for msg in issues:
            for i, chunk in enumerate(_wrap(operators.short_paths(msg), 44)):
                layout.label(text=chunk, icon="ERROR" if i == 0 else "BLANK1")


def _draw_first_steps(layout: bpy.types.UILayout) -> None:
    """Nothing to animate is selected: say what to do next, with the first button at hand."""
    box = layout.box()
    box.label(text="Get started:", icon="HELP")
    box.label(text="1. Select your face mesh, or add the default head:")
    box.operator("mesh.parley_head_add", icon="USER")
    box.label(text="2. Choose an audio file below")
    box.label(text="3. Click Generate from Audio (Esc cancels)")


def _draw_progress(layout: bpy.types.UILayout, ui: modal_ui.ModalUI) -> None:
    """The running job in place of the button: a progress bar (4.0+) or a label (3.x)."""
    box = layout.box()
    box.scale_y = 1.3
    text = f"{ui.title}: {ui.text}"
    if hasattr(box, "progress"):
        box.progress(factor=ui.fraction, type="BAR", text=text)
    else:
        box.label(text=text, icon="SORTTIME")
    box.label(text="Press Esc to cancel (nothing is changed)", icon="CANCEL")


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        lines.append(cur)
    return lines or [""]


classes = (PARLEY_PT_generate,)

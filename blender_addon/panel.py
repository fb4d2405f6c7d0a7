"""The "Parley" tab in the 3D viewport sidebar."""
from __future__ import annotations

import re

import bpy

from . import bake, character_panel, formats, modal_ui, operators, operators_strips, preferences
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
        box.prop(s, "checkpoint_source", text="Model")
        if s.checkpoint_source == "FILE":
            box.prop(s, "checkpoint_path", text="")
        elif s.checkpoint_source == "SHIPPED":
            box.prop(s, "shipped_checkpoint", text="")
        info = operators.context_checkpoint_info(context)
        if isinstance(info, formats.CheckpointInfo):
            # short lines: the sidebar is narrow (fingerprints stay in the mismatch message)
            col = box.column(align=True)
            col.label(text=info.kind, icon="INFO")
            v = "?" if info.num_vertices is None else f"{info.num_vertices:,}"
            col.label(text=f"{v} vertices, {info.fps:g} fps", icon="BLANK1")
            if info.topology_name:
                col.label(text=f"Head: {info.topology_name}", icon="BLANK1")
            trained = info.data_card.get("name") or info.data_card.get("dataset")
            if trained:
                col.label(text=f"Trained on: {trained}", icon="BLANK1")
        else:
            for i, chunk in enumerate(_wrap(operators.short_paths(info), 30)):
                box.label(text=chunk, icon="ERROR" if i == 0 else "BLANK1")

        if obj is None or obj.type != "MESH":
            _draw_first_steps(layout)

        col = layout.column()
        col.label(text=f"{obj.name if obj else 'No target'}"
                       + (f": {len(mesh.vertices):,} vertices" if isinstance(mesh, bpy.types.Mesh) else ""),
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
        col.prop(s, "close_lips")
        if s.close_lips:
            col.prop(s, "use_transcript")

        row = col.row()
        row.prop(s, "device")
        prefs = preferences.get_prefs(context)
        probe = PROBES.get(preferences.interpreter(prefs))
        if probe is None:
            col.operator("parley.check_engine", text="Detect devices", icon="VIEWZOOM")
        elif probe.get("ok"):
            col.label(text=f"Detected: CPU{', CUDA' if probe.get('cuda') else ' (no CUDA)'}")
        else:
            for i, chunk in enumerate(_wrap(f"Engine not usable: {probe.get('error')}", 30)):
                col.label(text=chunk, icon="ERROR" if i == 0 else "BLANK1")

        sub = col.row()
        sub.enabled = s.audio_source == "FILE"
        sub.prop(s, "start_frame")
        col.prop(s, "fps_source", text="FPS")
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
            for i, chunk in enumerate(_wrap(operators.short_paths(msg), 30)):
                layout.label(text=chunk, icon="ERROR" if i == 0 else "BLANK1")


class PARLEY_PT_dialogue(bpy.types.Panel):
    """Dialogue scenes: the strip → character rule, its table, the resulting lines, one button."""

    bl_label = "Dialogue: all sound strips"
    bl_idname = "PARLEY_PT_dialogue"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Parley"
    bl_parent_id = "PARLEY_PT_generate"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        assert layout is not None
        s = getattr(operators.scene_of(context), "parley")  # noqa: B009
        layout.prop(s, "strip_rule")
        layout.prop(s, "strips_selected_only")
        box = layout.box()
        head = {"PREFIX": "Name prefix", "CHANNEL": "Channel", "TABLE": "Strip name"}[s.strip_rule]
        row = box.row()
        row.label(text=f"{head} -> mesh")
        row.operator("parley.character_add", text="", icon="ADD")
        row.operator("parley.character_remove", text="", icon="REMOVE")
        for i, item in enumerate(s.characters):
            row = box.row(align=True)
            row.prop(item, "key", text="")
            row.prop(item, "object", text="")
            if i == s.characters_index:
                row.label(text="", icon="RIGHTARROW_THIN")
        if not len(s.characters) and s.strip_rule == "PREFIX":
            box.label(text="Empty: Alice_hello is spoken by 'Alice'", icon="INFO")
        plan = operators_strips.dialogue_plan(context)
        col = layout.column(align=True)
        col.label(text=f"{len(plan.lines)} line(s) to bake:")
        for line in plan.lines[:8]:
            col.label(text=f"{line.strip} @ {line.start_frame} -> {line.object_name}", icon="SPEAKER")
        if len(plan.lines) > 8:
            col.label(text=f"… and {len(plan.lines) - 8} more")
        for why in plan.skipped[:4]:
            for i, chunk in enumerate(_wrap(why, 30)):
                col.label(text=chunk, icon="ERROR" if i == 0 else "BLANK1")
        if modal_ui.current() is None:
            row = layout.row()
            row.scale_y = 1.4
            row.enabled = bool(plan.lines)
            row.operator("parley.generate_strips", icon="SEQUENCE")


def _draw_first_steps(layout: bpy.types.UILayout) -> None:
    """Nothing to animate is selected: say what to do next, with the first button at hand."""
    box = layout.box()
    box.label(text="Get started:", icon="HELP")
    box.label(text="1. Select your face mesh,")
    box.label(text="    or add the default head:")
    box.operator("mesh.parley_head_add", icon="USER")
    box.label(text="2. Choose an audio file below")
    box.label(text="3. Click Generate from Audio")


def _draw_progress(layout: bpy.types.UILayout, ui: modal_ui.ModalUI) -> None:
    """The running job in place of the button: a progress bar (4.0+) or a label (3.x)."""
    box = layout.box()
    title = f"{ui.title}: {ui.percent}%"
    if hasattr(box, "progress"):
        box.progress(factor=ui.fraction, type="BAR", text=title)
    else:
        box.label(text=title, icon="SORTTIME")
    words = re.sub(r"\s*\d+%$", "", ui.text)  # the percentage is in the title line
    for chunk in _wrap(words, 30):
        box.label(text=chunk, icon="BLANK1")
    box.label(text="Esc cancels", icon="CANCEL")


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


classes = (PARLEY_PT_generate, PARLEY_PT_dialogue)

"""Per-scene settings of the Parley panel (``scene.parley``)."""
from __future__ import annotations

from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)


def _is_mesh(_self: object, obj: bpy.types.Object) -> bool:
    return obj.type == "MESH"


_SHIPPED_ITEMS: list[tuple[str, str, str]] = []  # Blender needs the item strings kept alive


def _shipped_items(_self: object, _context: object) -> list[tuple[str, str, str]]:
    """The engine's shipped checkpoints (``engine/assets/*.safetensors``), named from their
    headers (read without torch)."""
    from . import checkpoints

    _SHIPPED_ITEMS[:] = [(c.file, c.label, c.description) for c in checkpoints.shipped()] or \
        [("", "(no shipped model found)", "engine/assets holds no .safetensors file")]
    return _SHIPPED_ITEMS


class ParleyCharacter(bpy.types.PropertyGroup):
    """One row of the dialogue table: a strip-name prefix, channel number or strip name → mesh."""

    key: StringProperty(name="Key", description="Strip-name prefix, channel number or strip name (see Rule)",  # type: ignore[valid-type]
                        default="")
    object: PointerProperty(name="Character", type=bpy.types.Object, poll=_is_mesh)  # type: ignore[valid-type]


class ParleySettings(bpy.types.PropertyGroup):
    checkpoint_source: EnumProperty(  # type: ignore[valid-type]
        name="Checkpoint",
        items=[("DEFAULT", "Bundled default", "The model shipped with the add-on"),
               ("SHIPPED", "Shipped model", "One of the models shipped in the engine's assets folder"),
               ("FILE", "File", "A .safetensors checkpoint")],
        default="DEFAULT")
    shipped_checkpoint: EnumProperty(name="Model", items=_shipped_items)  # type: ignore[valid-type]
    checkpoint_path: StringProperty(name="Checkpoint file", subtype="FILE_PATH", default="")  # type: ignore[valid-type]
    audio_source: EnumProperty(  # type: ignore[valid-type]
        name="Audio",
        items=[("FILE", "File", "An audio file (a sound strip is added)"),
               ("STRIP", "Active sound strip", "The sequencer's active sound strip (its start frame is used)")],
        default="FILE")
    audio_path: StringProperty(name="Audio file", subtype="FILE_PATH", default="")  # type: ignore[valid-type]
    style_source: EnumProperty(  # type: ignore[valid-type]
        name="Style",
        items=[("NONE", "None", "The model's neutral speaking style"),
               ("OBJECT", "Object", "Another object's mesh cache or shape-key animation"),
               ("FILE", "File", "A .npy or .pc2 animation")],
        default="NONE")
    style_object: PointerProperty(name="Style object", type=bpy.types.Object, poll=_is_mesh)  # type: ignore[valid-type]
    style_path: StringProperty(name="Style file", subtype="FILE_PATH", default="")  # type: ignore[valid-type]
    device: EnumProperty(  # type: ignore[valid-type]
        name="Device",
        items=[("PREFS", "Preferences default", "The device chosen in the add-on preferences"),
               ("AUTO", "Auto", "CUDA when available, else CPU"),
               ("CUDA", "CUDA", "NVIDIA GPU"),
               ("CPU", "CPU", "CPU")],
        default="PREFS")
    close_lips: BoolProperty(  # type: ignore[valid-type]
        name="Close lips on B/P/M", default=True,
        description="Shut the lips where the audio has a /p b m/ (the engine's lipclose post-processing); "
                    "off = the model's output as is")
    use_transcript: BoolProperty(  # type: ignore[valid-type]
        name="Use transcript (.txt beside the audio)", default=True,
        description="When line.txt lies next to line.wav, the lips close on its /p b m/, timed by forced "
                    "alignment, instead of the ones the recogniser hears (a word it cannot align: a warning, "
                    "and the audio alone is used)")
    start_frame: IntProperty(name="Start frame", default=1)  # type: ignore[valid-type]
    fps_source: EnumProperty(  # type: ignore[valid-type]
        name="Frame rate",
        items=[("SCENE", "Scene fps", "Animate at the scene's frame rate"),
               ("CHECKPOINT", "Checkpoint fps", "Animate at the model's frame rate and set the scene to it")],
        default="SCENE")
    bake_mode: EnumProperty(  # type: ignore[valid-type]
        name="Bake",
        items=[("CACHE", "Mesh cache", "PC2 file next to the .blend + Mesh Cache modifier (best for long clips)"),
               ("SHAPEKEYS", "Shape keys", "One shape key per frame, driven so playback stays fast")],
        default="CACHE")
    relative_keys: BoolProperty(  # type: ignore[valid-type]
        name="Relative keys",
        description="One relative key per frame keyed 0/1 (for tools that need relative keys); "
                    "playback slows down with clip length", default=False)
    add_sound_strip: BoolProperty(name="Add sound strip", default=True)  # type: ignore[valid-type]
    set_frame_range: BoolProperty(name="Set scene frame range", default=False)  # type: ignore[valid-type]
    strip_rule: EnumProperty(  # type: ignore[valid-type]
        name="Rule",
        items=[("PREFIX", "Name prefix", "The strip's name starts with the key (empty table: the text before "
                "the first '_' is the object's name, e.g. Alice_hello -> Alice)"),
               ("CHANNEL", "Channel", "The key is the strip's sequencer channel number"),
               ("TABLE", "Strip name", "The key is the strip's exact name")],
        default="PREFIX")
    strips_selected_only: BoolProperty(name="Selected strips only", default=False)  # type: ignore[valid-type]
    characters: CollectionProperty(type=ParleyCharacter)  # type: ignore[valid-type]
    characters_index: IntProperty(default=0)  # type: ignore[valid-type]
    use_object_template: BoolProperty(  # type: ignore[valid-type]
        name="Use object's face shape",
        description="Send the object's rest shape to the engine as the template (animate this identity)",
        default=True)


classes = (ParleyCharacter, ParleySettings)


def register_props() -> None:
    # (the stubs type PointerProperty() as returning None; at runtime it is a deferred property)
    prop: Any = PointerProperty(type=ParleySettings)  # type: ignore[func-returns-value]
    setattr(bpy.types.Scene, "parley", prop)  # noqa: B010  (the stubs do not know this attribute)


def unregister_props() -> None:
    del bpy.types.Scene.parley  # type: ignore[attr-defined]

"""Per-scene settings of the Parley panel (``scene.parley``)."""
from __future__ import annotations

from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)


def _is_mesh(_self: object, obj: bpy.types.Object) -> bool:
    return obj.type == "MESH"


class ParleySettings(bpy.types.PropertyGroup):
    checkpoint_source: EnumProperty(  # type: ignore[valid-type]
        name="Checkpoint",
        items=[("DEFAULT", "Bundled default", "The model shipped with the add-on"),
               ("FILE", "File", "A .safetensors checkpoint")],
        default="DEFAULT")
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
    use_object_template: BoolProperty(  # type: ignore[valid-type]
        name="Use object's face shape",
        description="Send the object's rest shape to the engine as the template (animate this identity)",
        default=True)


classes = (ParleySettings,)


def register_props() -> None:
    # (the stubs type PointerProperty() as returning None; at runtime it is a deferred property)
    prop: Any = PointerProperty(type=ParleySettings)  # type: ignore[func-returns-value]
    setattr(bpy.types.Scene, "parley", prop)  # noqa: B010  (the stubs do not know this attribute)


def unregister_props() -> None:
    del bpy.types.Scene.parley  # type: ignore[attr-defined]

"""Per-scene settings of the "any character" part of the panel (``scene.parley_character``)."""
from __future__ import annotations

from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, PointerProperty, StringProperty


class ParleyCharacterSettings(bpy.types.PropertyGroup):
    target: EnumProperty(  # type: ignore[valid-type]
        name="Target",
        items=[("VERTICES", "This mesh's vertices",
                "Animate the mesh's vertices (mesh cache or shape keys). A mesh of another topology than the "
                "model's is fitted once (Fit) and the animation carried onto it"),
               ("SHAPEKEYS", "This mesh's shape keys",
                "Drive the mesh's own shape keys (ARKit, VRM, visemes...): an Action of weight curves on an "
                "NLA track")],
        default="VERTICES")
    up_axis: EnumProperty(  # type: ignore[valid-type]
        name="Up axis",
        items=[("AUTO", "Auto", "Try Z up, then Y up (imported OBJ files are often Y up in local space)"),
               ("Z", "Z", "The head's local Z axis points up, the face looks along -Y (Blender's front view)"),
               ("Y", "Y", "The head's local Y axis points up, the face looks along +Z (OBJ convention)")],
        default="AUTO")
    head_group: StringProperty(  # type: ignore[valid-type]
        name="Head group",
        description="Vertex group holding the head, for a head that is part of a larger mesh (empty: found "
                    "automatically)", default="")
    curves: EnumProperty(  # type: ignore[valid-type]
        name="Curves",
        items=[("SPARSE", "Sparse", "Few Bezier keys per curve, within the tolerance of the per-frame weights "
                                    "(editable)"),
               ("DENSE", "Dense", "One key per frame (exact, hard to edit)")],
        default="SPARSE")
    tolerance: FloatProperty(  # type: ignore[valid-type]
        name="Tolerance", description="Largest weight error the sparse curves may have at any frame",
        default=0.02, min=0.001, max=0.5, precision=3)
    show_landmarks: BoolProperty(name="Landmarks", default=False)  # type: ignore[valid-type]


classes = (ParleyCharacterSettings,)


def register_props() -> None:
    prop: Any = PointerProperty(type=ParleyCharacterSettings)  # type: ignore[func-returns-value]
    setattr(bpy.types.Scene, "parley_character", prop)  # noqa: B010


def unregister_props() -> None:
    del bpy.types.Scene.parley_character  # type: ignore[attr-defined]

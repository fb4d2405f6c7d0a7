"""Add > Mesh > Parley Head: the bundled default head, upright, with readable materials.

Why not Blender's OBJ importer: it treats OBJ as Y-up and rotates the object 90° about X,
so the Z-up asset lay on its side. The file is read here (vertices and triangles, nothing
else) and the mesh is built in the engine's own frame and vertex order, so its topology is
exactly the bundled model's. Material slots come from the head's region masks
(``default_head.masks.json``): skin, lips, teeth, mouth interior, eye whites, irises.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import bpy
import numpy as np

from . import preferences

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems as Ret
else:
    Ret = str

HEAD_NAME = "Parley Head"
# (slot name, mask whose faces get it (None: everything else), base colour, roughness)
MATERIALS: list[tuple[str, str | None, tuple[float, float, float], float]] = [
    ("Parley Skin", None, (0.80, 0.56, 0.45), 0.55),
    ("Parley Lips", "vermilion", (0.62, 0.28, 0.27), 0.45),
    ("Parley Mouth", "mouth_interior", (0.25, 0.05, 0.06), 0.6),
    ("Parley Teeth", "teeth", (0.92, 0.90, 0.82), 0.3),
    ("Parley Eye", "eyeballs", (0.93, 0.93, 0.92), 0.15),
    ("Parley Iris", "iris", (0.12, 0.22, 0.35), 0.2),
]


def head_paths() -> tuple[str, str] | None:
    """(default_head.obj, default_head.masks.json) of the bundled engine, or None."""
    root = preferences.engine_root()
    if root is None:
        return None
    base = os.path.join(root, "engine", "assets", "default_head")
    return (base + ".obj", base + ".masks.json") if os.path.isfile(base + ".obj") else None


def read_obj(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(V,3) float32 vertices and (F,3) int triangles of a triangulated OBJ (1-based, 'v/vt/vn' ok)."""
    verts: list[list[float]] = []
    faces: list[list[int]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("v "):
                verts.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("f "):
                idx = [int(tok.split("/")[0]) - 1 for tok in line.split()[1:]]
                faces.extend([idx[0], idx[i], idx[i + 1]] for i in range(1, len(idx) - 1))
    return np.asarray(verts, np.float32), np.asarray(faces, np.int32)


def _material(name: str, color: tuple[float, float, float], roughness: float) -> bpy.types.Material:
    mat = bpy.data.materials.get(name)
    if mat is None:
        mat = bpy.data.materials.new(name)
        mat.diffuse_color = (*color, 1.0)  # the solid viewport's colour
        mat.roughness = roughness
        mat.use_nodes = True
        bsdf = mat.node_tree.nodes.get("Principled BSDF") if mat.node_tree else None
        if bsdf is not None:
            bsdf.inputs["Base Color"].default_value = (*color, 1.0)
            bsdf.inputs["Roughness"].default_value = roughness
    return mat


def build_head(context: Any, obj_path: str, masks_path: str | None) -> bpy.types.Object:
    verts, faces = read_obj(obj_path)
    mesh = bpy.data.meshes.new(HEAD_NAME)
    mesh.vertices.add(len(verts))
    mesh.vertices.foreach_set("co", verts.ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.polygons.foreach_set("loop_total", np.full(len(faces), 3, np.int32))
    mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), bool))
    mesh.update(calc_edges=True)
    mesh.validate()
    masks: dict[str, list[int]] = {}
    if masks_path and os.path.isfile(masks_path):
        with open(masks_path, encoding="utf-8") as fh:
            masks = json.load(fh).get("masks", {})
    index = np.zeros(len(faces), np.int32)
    for slot, (name, mask, color, rough) in enumerate(MATERIALS):
        mesh.materials.append(_material(name, color, rough))
        if mask and mask in masks:
            sel = np.zeros(len(verts), bool)
            sel[np.asarray(masks[mask], np.int64)] = True
            index[sel[faces].all(axis=1)] = slot  # later (smaller) regions win: iris over eyeball
    mesh.polygons.foreach_set("material_index", index)
    obj = bpy.data.objects.new(HEAD_NAME, mesh)
    context.collection.objects.link(obj)
    obj.location = context.scene.cursor.location
    for o in context.view_layer.objects:
        o.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    return obj


class PARLEY_OT_head_add(bpy.types.Operator):
    """Add the head the bundled Parley model animates (upright, with skin, teeth and eye materials)"""

    bl_idname = "mesh.parley_head_add"
    bl_label = "Parley Head"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[Ret]:
        paths = head_paths()
        if paths is None:
            self.report({"ERROR"}, "Parley: the bundled head (engine/assets/default_head.obj) is missing; "
                                   "reinstall the add-on")
            return {"CANCELLED"}
        if context.mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        obj = build_head(context, *paths)
        self.report({"INFO"}, f"Parley: added '{obj.name}' ({len(getattr(obj.data, 'vertices', ())):,} vertices); "
                              "next: Sidebar (N) > Parley, choose an audio file, Generate")
        return {"FINISHED"}


def menu_entry(self: Any, _context: Any) -> None:
    self.layout.operator(PARLEY_OT_head_add.bl_idname, icon="USER")


classes = (PARLEY_OT_head_add,)


def register_menu() -> None:
    bpy.types.VIEW3D_MT_mesh_add.append(menu_entry)


def unregister_menu() -> None:
    bpy.types.VIEW3D_MT_mesh_add.remove(menu_entry)

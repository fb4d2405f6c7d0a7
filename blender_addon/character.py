"""A character's own data for "any character" (issue 10): its fit, landmarks, shape keys, overlays.

Where things live (all on the object, so they travel with the .blend, follow undo and need no
saved file):

* ``obj["parley_fit"]`` -- the bytes of the engine's fit file (``python -m engine fit`` output,
  an ``.npz`` of plain arrays), ``obj["parley_fit_mesh"]`` -- the mesh fingerprint
  (:func:`character_files.mesh_fingerprint`) when it was fitted, ``obj["parley_fit_info"]`` -- a
  JSON summary for the panel. A fit is used only while the mesh still has that fingerprint and
  the checkpoint animates the template it was fitted to; otherwise the panel asks to fit again.
* ``obj["parley_landmarks"]`` -- landmarks picked in Edit Mode ({name: vertex index}); when all
  six are there the fit uses them instead of finding them.
* Overlays: one empty per landmark and a wire copy of the fitted template, parented to the
  object and tagged with ``parley_overlay`` so they are found and removed again.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np

from . import character_files as cf

FIT_PROP, FIT_MESH_PROP, FIT_INFO_PROP = "parley_fit", "parley_fit_mesh", "parley_fit_info"
LANDMARKS_PROP = "parley_landmarks"
OVERLAY_TAG = "parley_overlay"  # on overlay objects: "<kind>:<owner object name>"
_FRAME_KEY = re.compile(r".+_\d{5}$")  # per-frame keys of a Parley vertex bake (not the rig's own)


def settings(scene: bpy.types.Scene) -> Any:
    return getattr(scene, "parley_character")  # noqa: B009  (registered at runtime)


# ------------------------------------------------------------------------------ mesh data
def mesh_of(obj: bpy.types.Object) -> bpy.types.Mesh:
    mesh = obj.data
    assert isinstance(mesh, bpy.types.Mesh), f"{obj.name} is not a mesh"
    return mesh


def rest_vertices(obj: bpy.types.Object) -> np.ndarray:
    """(N, 3) float32 object-local positions of the base mesh (no shape keys, no modifiers)."""
    mesh = mesh_of(obj)
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def polygons(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray]:
    mesh = mesh_of(obj)
    sizes = np.empty(len(mesh.polygons), dtype=np.int32)
    mesh.polygons.foreach_get("loop_total", sizes)
    loops = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", loops)
    return loops, sizes


def triangles(obj: bpy.types.Object) -> np.ndarray:
    mesh = mesh_of(obj)
    mesh.calc_loop_triangles()
    tri = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
    mesh.loop_triangles.foreach_get("vertices", tri)
    return tri.reshape(-1, 3)


def fingerprint(obj: bpy.types.Object) -> str:
    loops, sizes = polygons(obj)
    return cf.mesh_fingerprint(rest_vertices(obj), loops, sizes)


def export_mesh(obj: bpy.types.Object, path: str) -> None:
    """The rest mesh in object local space, vertex order kept (the engine's output maps 1:1)."""
    cf.write_mesh_npz(path, rest_vertices(obj), triangles(obj))


def shape_key_arrays(obj: bpy.types.Object) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float],
                                                      dict[str, float]]:
    """Basis and every other key's absolute positions, with slider ranges; Parley's own
    per-frame keys (``clip_00012``) are not rig keys and are skipped."""
    key = mesh_of(obj).shape_keys
    if key is None or len(key.key_blocks) < 2:
        raise cf.FormatError(f"'{obj.name}' has no shape keys to drive: add shape keys, or choose "
                             "Target: This mesh's vertices")
    n = len(mesh_of(obj).vertices)

    def co(kb: Any) -> np.ndarray:
        a = np.empty(n * 3, dtype=np.float32)
        kb.data.foreach_get("co", a)
        return a.reshape(-1, 3)

    ref = key.reference_key
    keys, lo, hi = {}, {}, {}
    for kb in key.key_blocks:
        if kb.name == ref.name or _FRAME_KEY.match(kb.name):
            continue
        keys[kb.name] = co(kb)
        lo[kb.name], hi[kb.name] = float(kb.slider_min), float(kb.slider_max)
    if not keys:
        raise cf.FormatError(f"'{obj.name}' has only Parley's per-frame keys, no rig shape keys to drive")
    return co(ref), keys, lo, hi


def export_shapes(obj: bpy.types.Object, path: str) -> list[str]:
    basis, keys, lo, hi = shape_key_arrays(obj)
    return cf.write_shapes_npz(path, basis, keys, lo, hi)


def head_group_indices(obj: bpy.types.Object, group: str) -> list[int]:
    vg = obj.vertex_groups.get(group)
    if vg is None:
        raise cf.FormatError(f"'{obj.name}' has no vertex group {group!r} (the Head group setting)")
    gi = vg.index
    out = [v.index for v in mesh_of(obj).vertices if any(g.group == gi and g.weight > 0 for g in v.groups)]
    if not out:
        raise cf.FormatError(f"vertex group {group!r} is empty: assign the head's vertices to it")
    return out


# ------------------------------------------------------------------------------ the stored fit
@dataclass
class FitState:
    status: str  # "none" | "valid" | "stale"
    message: str = ""
    info: dict[str, Any] | None = None


def fit_state(obj: bpy.types.Object | None, template_fingerprint: str | None = None) -> FitState:
    """Is there a fit for this mesh (and this checkpoint's template)?"""
    if obj is None or obj.type != "MESH" or obj.get(FIT_PROP) is None:
        return FitState("none", "Not fitted yet: click Fit")
    info = json.loads(str(obj.get(FIT_INFO_PROP, "{}")))
    if obj.get(FIT_MESH_PROP) != fingerprint(obj):
        return FitState("stale", "The mesh changed since it was fitted: click Fit again", info)
    if template_fingerprint and info.get("template_fingerprint") not in (None, template_fingerprint):
        return FitState("stale", "Fitted for another checkpoint's template: click Fit again", info)
    return FitState("valid", f"Fitted, residual {info.get('residual', 0):.4f}", info)


def store_fit(obj: bpy.types.Object, fit_bytes: bytes, mesh_fp: str) -> cf.FitSummary:
    summary = cf.read_fit_summary(fit_bytes)
    info = {k: summary.meta.get(k) for k in ("residual", "landmark_error", "coverage", "landmark_source", "seconds",
                                              "head_vertices", "lip_pairs", "up", "template_fingerprint")}
    obj[FIT_PROP] = bytes(fit_bytes)
    obj[FIT_MESH_PROP] = mesh_fp
    obj[FIT_INFO_PROP] = json.dumps(info)
    return summary


def clear_fit(obj: bpy.types.Object) -> None:
    for k in (FIT_PROP, FIT_MESH_PROP, FIT_INFO_PROP):
        if obj.get(k) is not None:
            del obj[k]


def write_fit(obj: bpy.types.Object, path: str) -> None:
    with open(path, "wb") as fh:
        fh.write(bytes(obj[FIT_PROP]))


# ------------------------------------------------------------------------------ landmarks
def assigned_landmarks(obj: bpy.types.Object | None) -> dict[str, int]:
    if obj is None or obj.get(LANDMARKS_PROP) is None:
        return {}
    return {str(k): int(v) for k, v in obj[LANDMARKS_PROP].items() if k in cf.LANDMARKS}


def set_landmark(obj: bpy.types.Object, name: str, index: int | None) -> None:
    lms = assigned_landmarks(obj)
    if index is None:
        lms.pop(name, None)
    else:
        lms[name] = int(index)
    if lms:
        obj[LANDMARKS_PROP] = lms
    elif obj.get(LANDMARKS_PROP) is not None:
        del obj[LANDMARKS_PROP]


def selected_vertex(obj: bpy.types.Object) -> int:
    """The active vertex (or the only selected one) in Edit Mode."""
    import bmesh

    bm = bmesh.from_edit_mesh(mesh_of(obj))
    act = bm.select_history.active
    if isinstance(act, bmesh.types.BMVert) and act.select:
        return int(act.index)
    sel = [v.index for v in bm.verts if v.select]
    if len(sel) != 1:
        raise cf.FormatError(f"select exactly one vertex ({len(sel)} selected)")
    return int(sel[0])


# ------------------------------------------------------------------------------ overlays
def overlays(obj: bpy.types.Object, kind: str) -> list[bpy.types.Object]:
    tag = f"{kind}:{obj.name}"
    return [o for o in bpy.data.objects if o.get(OVERLAY_TAG) == tag]


def remove_overlays(obj: bpy.types.Object, kind: str) -> int:
    found = overlays(obj, kind)
    for o in found:
        data = o.data
        bpy.data.objects.remove(o)
        if isinstance(data, bpy.types.Mesh) and data.users == 0:
            bpy.data.meshes.remove(data)
    return len(found)


def _attach(obj: bpy.types.Object, child: bpy.types.Object, kind: str) -> None:
    child[OVERLAY_TAG] = f"{kind}:{obj.name}"
    for coll in obj.users_collection:
        coll.objects.link(child)
    child.parent = obj  # positions are in obj's local space: parent with an identity inverse
    child.hide_render = True
    child.hide_select = True


def landmark_points(obj: bpy.types.Object) -> dict[str, tuple[np.ndarray, str]]:
    """Landmark positions (object local) to draw: picked ones, else the fit's."""
    picked = assigned_landmarks(obj)
    co = rest_vertices(obj)
    out: dict[str, tuple[np.ndarray, str]] = {n: (co[i], "picked") for n, i in picked.items() if i < len(co)}
    if obj.get(FIT_PROP) is not None:
        s = cf.read_fit_summary(bytes(obj[FIT_PROP]))
        for n, p in zip(s.landmark_names, s.landmarks):
            out.setdefault(n, (p, "fit"))
    return out


def show_landmarks(obj: bpy.types.Object) -> int:
    remove_overlays(obj, "landmark")
    pts = landmark_points(obj)
    co = rest_vertices(obj)
    size = 0.01 * float(np.linalg.norm(np.ptp(co, axis=0))) if len(co) else 0.01
    for name, (p, src) in pts.items():
        e = bpy.data.objects.new(f"{obj.name} {cf.LANDMARK_LABELS.get(name, name)} ({src})", None)
        e.empty_display_type = "SPHERE"
        e.empty_display_size = size
        e.location = tuple(float(x) for x in p)
        e.show_in_front = True
        _attach(obj, e, "landmark")
    return len(pts)


def show_fit_preview(obj: bpy.types.Object, checkpoint: str) -> bpy.types.Object:
    """A wire copy of the fitted template (object local space) over the character."""
    remove_overlays(obj, "preview")
    s = cf.read_fit_summary(bytes(obj[FIT_PROP]))
    faces = cf.read_safetensors_array(checkpoint, "topology.faces")
    if faces.max() >= len(s.fitted_template):
        raise cf.FormatError("the checkpoint's template is not the one this fit was made for: fit again")
    me = bpy.data.meshes.new(f"{obj.name} fitted template")
    me.from_pydata([tuple(map(float, v)) for v in s.fitted_template], [], [tuple(map(int, f)) for f in faces])
    me.update()
    o = bpy.data.objects.new(f"{obj.name} fitted template", me)
    o.display_type = "WIRE"
    o.show_in_front = True
    _attach(obj, o, "preview")
    return o

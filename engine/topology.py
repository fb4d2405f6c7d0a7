"""Face topology: neutral template, triangles, named vertex regions and frame rate.

A model predicts per-vertex offsets for one specific mesh connectivity. The fingerprint
(vertex count + hash of the triangle list) travels inside every checkpoint so that a mesh
with a different vertex count or order is refused with a message that says what was
expected, instead of producing garbage animation.

Vertex order is the identity of a topology, so meshes are read with trimesh's
``process=False, maintain_order=True`` (no merging, no reordering, no splitting on UVs).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.fileio import atomic_path, atomic_write

__all__ = ["PAIRED_MASKS", "REQUIRED_MASKS", "Topology", "TopologyMismatch", "load_masks_json", "masks_sidecar"]

REQUIRED_MASKS = ("lips", "upper_face", "face")
# Paired masks keep their order: upper_inner[i] sits above lower_inner[i].
PAIRED_MASKS = ("lip_upper_inner", "lip_lower_inner")
MESH_SUFFIXES = (".obj", ".ply")


class TopologyMismatch(ValueError):
    """A mesh or animation does not match the topology a model was trained for."""


def masks_sidecar(path: str | os.PathLike) -> Path:
    """``head.obj`` -> ``head.masks.json`` (masks cannot live inside OBJ/PLY files)."""
    path = Path(path)
    return path.with_name(path.stem + ".masks.json")


def _clean_mask(name: str, idx: Any, num_vertices: int) -> np.ndarray:
    arr = np.asarray(idx)
    if arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.all(np.equal(np.mod(arr, 1), 0)):
        raise ValueError(f"mask {name!r} must contain integer vertex indices")
    arr = arr.astype(np.int64).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= num_vertices):
        raise ValueError(
            f"mask {name!r} has vertex indices outside 0..{num_vertices - 1} "
            f"(min {arr.min()}, max {arr.max()}); it belongs to a different mesh"
        )
    return arr if name in PAIRED_MASKS else np.unique(arr)


def load_masks_json(path: str | os.PathLike) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Read a masks JSON: either ``{"masks": {...}, "fps":..., "name":...}`` or a bare ``{name: [idx...]}``."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of region name -> vertex index list")  # noqa: TRY004
    if "masks" in data and isinstance(data["masks"], dict):
        return data["masks"], {k: v for k, v in data.items() if k != "masks"}
    return {k: v for k, v in data.items() if isinstance(v, list)}, {}


@dataclass
class Topology:
    vertices: np.ndarray
    faces: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    fps: float = 30.0
    name: str = "face"

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float32)
        if v.ndim == 1 and v.size % 3 == 0:
            v = v.reshape(-1, 3)
        if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] == 0:
            raise ValueError(f"topology vertices must have shape (V, 3), got {np.shape(self.vertices)}")
        if not np.isfinite(v).all():
            raise ValueError("topology vertices contain NaN or infinite values")
        f = np.asarray(self.faces)
        if f.size == 0:
            f = np.zeros((0, 3), np.int64)
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"faces must be triangles with shape (F, 3), got {f.shape}")
        f = f.astype(np.int64)
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError(f"faces reference vertex {int(f.max())} but the mesh has only {len(v)} vertices")
        self.vertices = np.ascontiguousarray(v)
        self.faces = np.ascontiguousarray(f)
        self.masks = {str(k): _clean_mask(str(k), m, len(v)) for k, m in (self.masks or {}).items()}
        up, lo = (self.masks.get(n) for n in PAIRED_MASKS)
        if (up is None) != (lo is None) or (up is not None and len(up) != len(lo)):
            raise ValueError(f"{PAIRED_MASKS[0]} and {PAIRED_MASKS[1]} must both be given with equal length")
        self.fps = float(self.fps)

    # ------------------------------------------------------------------ identity
    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    def fingerprint(self) -> str:
        """``v{V}-f{F}-{sha256(faces as little-endian int64)[:12]}``; stable across platforms."""
        digest = hashlib.sha256(np.ascontiguousarray(self.faces, dtype="<i8").tobytes()).hexdigest()[:12]
        return f"v{self.num_vertices}-f{len(self.faces)}-{digest}"

    def check_compatible(self, num_vertices: int, fingerprint: str | None = None, what: str = "mesh") -> None:
        """Raise :class:`TopologyMismatch` unless ``num_vertices`` (and ``fingerprint``, if given) match."""
        expected = self.fingerprint()
        if int(num_vertices) != self.num_vertices:
            raise TopologyMismatch(
                f"{what} has {int(num_vertices)} vertices but the model expects {self.num_vertices} "
                f"(topology '{self.name}', fingerprint {expected}). Use a mesh with the model's topology "
                "(same vertices in the same order), or train/fine-tune a model on your mesh."
            )
        if fingerprint is not None and fingerprint != expected:
            raise TopologyMismatch(
                f"{what} has fingerprint {fingerprint} but the model expects {expected} "
                f"(topology '{self.name}'): same vertex count, different triangles, so the vertex order likely differs."
            )

    def with_vertices(self, vertices: np.ndarray) -> Topology:
        """Same faces and masks, another neutral shape (e.g. a user's sculpt of the same mesh)."""
        v = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
        self.check_compatible(len(v), what="template")
        return replace(self, vertices=v, masks=dict(self.masks))

    # ------------------------------------------------------------------ checkpoint I/O
    def to_tensors(self) -> dict[str, np.ndarray]:
        out = {"vertices": self.vertices, "faces": self.faces}
        for k, m in self.masks.items():
            out[f"mask.{k}"] = m
        return out

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "fps": self.fps, "fingerprint": self.fingerprint(),
                "num_vertices": self.num_vertices, "masks": sorted(self.masks)}

    @classmethod
    def from_tensors(cls, d: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Topology:
        """Inverse of :meth:`to_tensors`; accepts keys with or without a ``topology.`` prefix
        and torch tensors or numpy arrays. Verifies the stored fingerprint if ``meta`` has one."""
        meta = dict(meta or {})
        arrays: dict[str, np.ndarray] = {}
        for k, v in d.items():
            key = k.removeprefix("topology.")
            arrays[key] = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        if "vertices" not in arrays or "faces" not in arrays:
            raise ValueError("topology tensors need 'vertices' and 'faces'")
        masks = {k[5:]: v for k, v in arrays.items() if k.startswith("mask.")}
        topo = cls(arrays["vertices"], arrays["faces"], masks, fps=meta.get("fps", 30.0), name=meta.get("name", "face"))
        fp = meta.get("fingerprint")
        if fp is not None and fp != topo.fingerprint():
            raise TopologyMismatch(f"stored topology fingerprint {fp} does not match its faces ({topo.fingerprint()}); file is corrupt")
        return topo

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.npz`` (everything) or ``.obj``/``.ply`` (+ ``<stem>.masks.json``) atomically."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            arrays = {"vertices": self.vertices, "faces": self.faces,
                      "fps": np.float64(self.fps), "name": np.array(self.name)}
            arrays.update({f"mask__{k}": v for k, v in self.masks.items()})
            with atomic_path(path) as tmp:
                np.savez(tmp, **arrays)
            return path
        if suffix in MESH_SUFFIXES:
            import trimesh

            mesh = trimesh.Trimesh(self.vertices, self.faces, process=False)
            with atomic_path(path) as tmp:
                mesh.export(tmp)
            sidecar = {"name": self.name, "fps": self.fps,
                       "masks": {k: v.tolist() for k, v in self.masks.items()}}
            with atomic_write(masks_sidecar(path), "w") as fh:
                json.dump(sidecar, fh)
            return path
        raise ValueError(f"cannot save topology as {path.name}: use .npz, .obj or .ply")

    @classmethod
    def load(cls, path: str | os.PathLike, faces: np.ndarray | None = None,
             masks: Mapping[str, Any] | None = None, fps: float | None = None, name: str | None = None) -> Topology:
        """Read ``.npz``, ``.obj``/``.ply`` (masks from ``<stem>.masks.json`` if present) or ``.npy``
        (vertices only, as (V,3) or (V*3,); ``faces`` must then be given). Explicit ``masks``,
        ``fps`` and ``name`` arguments override what the files say."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"topology/mesh file not found: {path}")
        suffix = path.suffix.lower()
        info: dict[str, Any] = {}
        found_masks: dict[str, Any] = {}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                vertices = z["vertices"]
                file_faces = z["faces"] if "faces" in z.files else None
                found_masks = {k[6:]: z[k] for k in z.files if k.startswith("mask__")}
                if "fps" in z.files:
                    info["fps"] = float(z["fps"])
                if "name" in z.files:
                    info["name"] = str(z["name"])
            faces = faces if faces is not None else file_faces
        elif suffix in MESH_SUFFIXES:
            import trimesh

            try:
                mesh = trimesh.load(str(path), process=False, maintain_order=True, force="mesh")
            except Exception as exc:  # noqa: BLE001 - trimesh raises many types
                raise ValueError(f"cannot read mesh {path}: {exc}") from None
            vertices = np.asarray(mesh.vertices)
            if faces is None:
                faces = np.asarray(mesh.faces)
        elif suffix == ".npy":
            vertices = np.load(path, allow_pickle=False)
            if vertices.ndim == 2 and vertices.shape[0] == 1:
                vertices = vertices[0]
            if faces is None:
                raise ValueError(f"{path.name} holds vertices only: pass faces= (or use .obj/.ply/.npz)")
        else:
            raise ValueError(f"unsupported topology file {path.name}: use .obj, .ply, .npz or .npy")
        if faces is None:
            raise ValueError(f"{path} has no faces")
        side = masks_sidecar(path)
        if side.exists() and suffix != ".npz":
            side_masks, side_info = load_masks_json(side)
            found_masks = side_masks
            info.update({k: side_info[k] for k in ("fps", "name") if k in side_info})
        return cls(vertices, faces, dict(masks) if masks is not None else found_masks,
                   fps=fps if fps is not None else info.get("fps", 30.0),
                   name=name if name is not None else info.get("name", path.stem))

    def missing_masks(self, names: tuple[str, ...] = REQUIRED_MASKS) -> list[str]:
        return [n for n in names if n not in self.masks]

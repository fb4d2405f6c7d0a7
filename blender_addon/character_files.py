"""Files the add-on exchanges with the engine for "any character" (no ``bpy``; plain-Python tests).

* :func:`write_mesh_npz` -- the object's rest mesh for ``--mesh``/``--target`` (``vertices``,
  ``faces``: the engine's ``.npz`` mesh form; exact float32, vertex order kept).
* :func:`write_shapes_npz` -- the object's shape keys for ``--shapes``: ``Basis`` and one
  ``(V, 3)`` array of absolute positions per key (as Blender stores them), plus ``__meta__``
  (a JSON string with each key's slider range, which bounds the solved weights).
* :func:`write_landmarks_json` -- landmarks picked in Blender for ``--landmarks``.
* :func:`read_weights_json` -- the engine's ``--shapes`` output (``fps``, ``names``, frames x keys
  ``weights``, which path it used).
* :func:`read_fit_summary` -- what the panel shows of a fit file (residual, landmarks, the fitted
  template for the preview), read with ``allow_pickle=False``.
* :func:`mesh_fingerprint` -- changes whenever vertex positions or faces change: a stored fit is
  only used while the mesh still has the fingerprint it was fitted with.
* :func:`read_safetensors_array` -- one tensor of a checkpoint (the template's faces for the
  preview) without torch.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .formats import FormatError

#: the landmark names ``python -m engine fit --landmarks`` needs (engine.retarget.landmarks.REQUIRED;
#: a test keeps the two equal: the add-on does not import the engine, which pulls in torch)
LANDMARKS = ("nose_tip", "upper_lip", "mouth_centre", "lower_lip", "mouth_corner_l", "mouth_corner_r")
LANDMARK_LABELS = {"nose_tip": "Nose tip", "upper_lip": "Upper lip (middle)", "mouth_centre": "Mouth centre",
                   "lower_lip": "Lower lip (middle)", "mouth_corner_l": "Mouth corner L",
                   "mouth_corner_r": "Mouth corner R"}
LANDMARK_SHORT = {"nose_tip": "Nose", "upper_lip": "Upper lip", "mouth_centre": "Centre", "lower_lip": "Lower lip",
                  "mouth_corner_l": "Corner L", "mouth_corner_r": "Corner R"}  # panel rows (narrow sidebar)
RESERVED_KEYS = ("Basis", "__meta__")


def _atomic_bytes(path: str, data: bytes) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def mesh_fingerprint(vertices: np.ndarray, poly_vertices: np.ndarray, poly_sizes: np.ndarray) -> str:
    """``v{N}-p{P}-{sha256[:16]}`` over float32 positions and the polygons' vertex lists."""
    v = np.ascontiguousarray(vertices, dtype="<f4").reshape(-1, 3)
    h = hashlib.sha256(v.tobytes())
    h.update(np.ascontiguousarray(poly_sizes, dtype="<i4").tobytes())
    h.update(np.ascontiguousarray(poly_vertices, dtype="<i4").tobytes())
    return f"v{len(v)}-p{len(poly_sizes)}-{h.hexdigest()[:16]}"


def write_mesh_npz(path: str, vertices: np.ndarray, faces: np.ndarray) -> None:
    v = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(v) == 0 or len(f) == 0:
        raise FormatError("the mesh has no vertices or no faces")
    if f.min() < 0 or f.max() >= len(v):
        raise FormatError("a face refers to a vertex that does not exist")
    buf = io.BytesIO()
    np.savez(buf, vertices=v, faces=f)
    _atomic_bytes(path, buf.getvalue())


def write_shapes_npz(path: str, basis: np.ndarray, keys: Mapping[str, np.ndarray],
                     slider_min: Mapping[str, float] | None = None,
                     slider_max: Mapping[str, float] | None = None) -> list[str]:
    """Write ``shapes.npz``; returns the key names written (in order). Refuses what the engine
    would misread: no keys, a key named like a reserved entry, mismatched shapes."""
    b = np.asarray(basis, dtype=np.float32)
    if b.ndim != 2 or b.shape[1] != 3 or len(b) == 0:
        raise FormatError(f"the basis must be (V, 3) positions, got {b.shape}")
    if not keys:
        raise FormatError("the mesh has no shape keys besides the basis: add shape keys, or animate its vertices")
    arrays: dict[str, np.ndarray] = {"Basis": b}
    for name, pos in keys.items():
        if name in RESERVED_KEYS:
            raise FormatError(f"a shape key is named {name!r} but is not the basis: rename it")
        if "/" in name or "\\" in name:
            raise FormatError(f"shape key {name!r}: names with slashes cannot be exported, rename it")
        a = np.asarray(pos, dtype=np.float32)
        if a.shape != b.shape:
            raise FormatError(f"shape key {name!r} has shape {a.shape} but the basis has {b.shape}")
        arrays[name] = a
    meta = {"slider_min": {k: float(v) for k, v in (slider_min or {}).items() if k in keys},
            "slider_max": {k: float(v) for k, v in (slider_max or {}).items() if k in keys}}
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.array(json.dumps(meta)), **arrays)
    _atomic_bytes(path, buf.getvalue())
    return list(keys)


def write_landmarks_json(path: str, landmarks: Mapping[str, int], num_vertices: int) -> None:
    missing = [n for n in LANDMARKS if n not in landmarks]
    if missing:
        raise FormatError(f"{len(LANDMARKS) - len(missing)} of {len(LANDMARKS)} landmarks placed; also assign "
                          + ", ".join(LANDMARK_LABELS[n] for n in missing) + " (or clear them to use automatic ones)")
    out = {}
    for n in LANDMARKS:
        i = int(landmarks[n])
        if not 0 <= i < num_vertices:
            raise FormatError(f"landmark {LANDMARK_LABELS[n]} is vertex {i}, but the mesh has {num_vertices} "
                              "vertices (the mesh changed?): assign it again")
        out[n] = i
    _atomic_bytes(path, json.dumps(out, indent=1).encode())


@dataclass
class Weights:
    """Per-frame shape-key weights from ``animate --shapes``."""

    fps: float
    names: list[str]
    weights: np.ndarray  # (T, K)
    path: str = ""  # "fit" (geometric solve) or "names" (ARKit/VRM/Rhubarb name map)
    left_alone: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def read_weights_json(path: str) -> Weights:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a weights file ({exc})") from exc
    if not isinstance(doc, dict) or not {"fps", "names", "weights"} <= set(doc):
        raise FormatError(f"{path}: a weights file needs 'fps', 'names' and 'weights'")
    names = [str(n) for n in doc["names"]]
    w = np.asarray(doc["weights"], dtype=np.float64)
    if w.size == 0:
        w = w.reshape(-1, len(names))
    if w.ndim != 2 or w.shape[1] != len(names):
        raise FormatError(f"{path}: weights have shape {w.shape} for {len(names)} names")
    if not np.all(np.isfinite(w)):
        raise FormatError(f"{path}: weights are not all finite")
    fps = float(doc["fps"])
    if not fps > 0:
        raise FormatError(f"{path}: fps must be positive, got {fps}")
    extra = {k: v for k, v in doc.items() if k not in ("fps", "names", "weights", "path", "left_alone")}
    return Weights(fps=fps, names=names, weights=w, path=str(doc.get("path", "")),
                   left_alone=[str(n) for n in doc.get("left_alone", [])], extra=extra)


@dataclass
class FitSummary:
    mesh_fingerprint: str  # the engine's fingerprint of the exported mesh
    residual: float
    landmark_source: str
    landmark_names: list[str]
    landmarks: np.ndarray  # (L, 3) in the mesh's own (object local) axes
    fitted_template: np.ndarray  # (S, 3) the template registered onto the mesh, same axes
    template_fingerprint: str
    meta: dict[str, Any]


def read_fit_summary(data: bytes | str) -> FitSummary:
    """``data``: the fit file's bytes (as stored on the object) or a path."""
    src: Any = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        with np.load(src, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            lms = np.asarray(z["landmarks"], dtype=np.float64)
            tmpl = np.asarray(z["fitted_template"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as exc:
        raise FormatError(f"not a Parley fit ({exc}): fit the character again") from exc
    return FitSummary(mesh_fingerprint=str(meta.get("mesh_fingerprint", "")), residual=float(meta.get("residual", -1)),
                      landmark_source=str(meta.get("landmark_source", "?")),
                      landmark_names=[str(n) for n in meta.get("landmark_names", [])], landmarks=lms,
                      fitted_template=tmpl, template_fingerprint=str(meta.get("template_fingerprint", "")), meta=meta)


def read_safetensors_array(path: str, name: str) -> np.ndarray:
    """One tensor of a ``.safetensors`` file as a numpy array (header + byte range; no torch)."""
    dtypes = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "u1"}
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n).decode("utf-8"))
        if name not in header:
            raise FormatError(f"{os.path.basename(path)} has no tensor {name!r}")
        ent = header[name]
        if ent["dtype"] not in dtypes:
            raise FormatError(f"{name}: unsupported dtype {ent['dtype']}")
        a, b = ent["data_offsets"]
        fh.seek(8 + n + a)
        raw = fh.read(b - a)
    return np.frombuffer(raw, dtype=dtypes[ent["dtype"]]).reshape(ent["shape"]).copy()


_CLI_ADVICE = (
    ("pass --landmarks lm.json with vertex indices for",
     "place landmarks (Parley panel > Landmarks: select a vertex in Edit Mode, Assign) for"),
    ("--landmarks lm.json", "landmarks (Parley panel > Landmarks)"),
    ("check the landmark indices in the landmarks file", "check the landmarks you assigned (Parley panel > Landmarks)"),
    ("make sure --up/--front describe the mesh", "make sure the Up axis setting describes the mesh"),
    ("--vertex-group-file", "a head vertex group (Parley panel > Head group)"),
    ("--front", "the Up axis setting or the object's rotation (apply it so the face looks along -Y)"),
    ("(python -m engine fit --mesh ... --out ...)", "(click Fit)"),
    ("pass --target with the mesh so its keys can be solved geometrically",
     "click Fit so its keys can be solved geometrically"),
)


def explain_fit_message(message: str) -> str:
    """The engine's refusal, with its command-line advice said in panel terms."""
    for cli, ui in _CLI_ADVICE:
        message = message.replace(cli, ui)
    return message

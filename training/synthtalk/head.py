"""Procedural human head templates for SynthTalk (written from scratch, no third-party meshes).

Why procedural: Parley needs talking-face training data it may redistribute, on a mesh with
a real mouth (separate upper/lower lips that open and close) and blinking eyelids. We build
one fixed topology and vary only vertex positions across identities, exactly like VOCASET's
FLAME subjects, so models trained on it see "same mesh, different people".

Construction (all identities share it, so faces and masks never change):

* A closed (theta, elevation) grid around a centre point: theta is the azimuth (0 = front,
  positive toward +X, i.e. the character's left), elevation t from -90 (bottom of the neck)
  to +90 degrees (crown). Each grid vertex is ``centre + R(theta, t) * direction`` where R
  comes from a smooth union of skull, face and neck primitives plus smooth feature bumps
  (nose, lips, chin, brows, cheeks, eye sockets, ears). Rows and columns are denser on the
  face.
* The mouth slit is cut by construction: on the lip-line row, the vertices between the two
  mouth corners exist twice, an upper-lip copy used by the faces above the row and a
  lower-lip copy used by the faces below. The slit's loop (corner, upper lip, corner, lower
  lip) is extended inward by rings (inner lip roll, teeth, mouth cavity) ending in one
  vertex, so an open mouth shows a mouth, not a hole.
* Each eye opening is cut the same way; the lid rows are shaped into an almond, conform to
  a sphere slightly larger than the eyeball, and the opening is closed behind the lids. The
  eyeballs are separate UV spheres.

Units and axes (Blender-friendly): metres, Z up, the face looks toward -Y (Blender's front
view), +X is the character's left. The origin is near the centre of the skull, about at
eye height; the head is ~0.24 m from chin to crown, the neck ends 0.2 m below the origin.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.interpolate import PchipInterpolator

from engine.topology import Topology

__all__ = [
    "NUM_IDENTITIES",
    "SPLITS",
    "Head",
    "IdentityParams",
    "build_head",
    "default_head",
    "export_default_head",
    "identity",
    "subject_name",
]

DEG = np.pi / 180.0
NUM_IDENTITIES = 12
SPLITS = {"train": list(range(8)), "val": [8, 9], "test": [10, 11]}
DEFAULT_IDENTITY = 10

# ----------------------------------------------------------------------------- layout
# Topology-defining constants (degrees). Never make these depend on identity.
T_MOUTH = -37.0          # elevation of the lip line
T_EYE = 1.5              # elevation of the eye line
THETA_MOUTH = 14.0       # azimuth of the mouth corners
THETA_EYE_IN = 10.5       # inner eye corner
THETA_EYE_OUT = 32.5     # outer eye corner
THETA_EYE = 0.5 * (THETA_EYE_IN + THETA_EYE_OUT)

# (key, number of intervals to the next key); see module docstring
_COL_KEYS = [(0.0, 6), (THETA_EYE_IN, 2), (THETA_MOUTH, 9), (THETA_EYE_OUT, 5), (45.0, 8), (90.0, 6), (180.0, 0)]
_ROW_KEYS = [(-90.0, 4), (-62.0, 7), (-47.0, 9), (T_MOUTH, 19), (-15.0, 5), (-5.0, 5),
             (T_EYE, 6), (9.0, 11), (35.0, 8), (90.0, 0)]

MOUTH_RINGS = 5          # inner lip, teeth front, teeth edge, cavity, back of cavity (+ centre)
TEETH_RINGS = (2, 3)     # ring indices coloured as teeth
EYE_SPHERE = (8, 12)     # eyeball UV sphere (latitude bands, longitudes)


def _keyed_samples(keys: list[tuple[float, int]]) -> np.ndarray:
    out = []
    for (a, n), (b, _) in itertools.pairwise(keys):
        out.append(np.linspace(a, b, n, endpoint=False))
    out.append(np.array([keys[-1][0]]))
    return np.concatenate(out)


COLUMNS = np.concatenate([-_keyed_samples(_COL_KEYS)[::-1][1:-1], _keyed_samples(_COL_KEYS)])
ROWS = _keyed_samples(_ROW_KEYS)  # including both poles
ROW_MOUTH = int(np.argmin(np.abs(ROWS - T_MOUTH)))
ROW_EYE = int(np.argmin(np.abs(ROWS - T_EYE)))


def _col(theta: float) -> int:
    return int(np.argmin(np.abs(COLUMNS - theta)))


# ----------------------------------------------------------------------------- identities
@dataclass(frozen=True)
class IdentityParams:
    """Shape of one synthetic person. 1.0 (or 0.0 for offsets) is the average face.

    Scales are unitless multipliers; ``*_offset`` values are in metres or degrees as named.
    """
    name: str = "average"
    head_width: float = 1.0       # skull x scale
    head_depth: float = 1.0       # skull front-back scale
    face_width: float = 1.0       # x scale of the face
    face_length: float = 1.0      # vertical scale below the eyes
    jaw_width: float = 1.0
    chin: float = 1.0             # chin prominence
    nose_length: float = 1.0
    nose_width: float = 1.0
    nose_projection: float = 1.0  # how far the nose sticks out
    lip_thickness: float = 1.0
    mouth_width: float = 1.0
    eye_spacing: float = 1.0
    eye_size: float = 1.0
    brow_height_deg: float = 0.0  # brow ridge elevation offset
    brow_ridge: float = 1.0       # brow ridge prominence
    cheek_fullness: float = 1.0
    cheekbones: float = 1.0

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if k == "name":
                continue
            if not np.isfinite(v):
                raise ValueError(f"IdentityParams.{k} must be finite, got {v}")
            if k.endswith("_deg"):
                if abs(v) > 4.0:
                    raise ValueError(f"IdentityParams.{k}={v} out of range [-4, 4] degrees")
            elif not 0.5 <= v <= 1.6:
                raise ValueError(f"IdentityParams.{k}={v} out of range [0.5, 1.6]")


# Twelve fixed people (0-7 train, 8-9 val, 10-11 test). Hand-written so they are stable forever.
_IDENTITY_TABLE: list[dict[str, float]] = [
    {"head_width": 1.00, "face_width": 1.00, "face_length": 1.00, "jaw_width": 1.05, "chin": 1.10, "nose_length": 1.00,
         "nose_width": 1.05, "nose_projection": 1.00, "lip_thickness": 1.00, "mouth_width": 1.00, "eye_spacing": 1.00,
         "brow_height_deg": 0.0, "brow_ridge": 1.2, "cheek_fullness": 0.9, "cheekbones": 1.0},
    {"head_width": 0.95, "face_width": 0.94, "face_length": 1.06, "jaw_width": 0.90, "chin": 0.9, "nose_length": 1.10,
         "nose_width": 0.90, "nose_projection": 1.10, "lip_thickness": 1.20, "mouth_width": 0.95, "eye_spacing": 0.97,
         "eye_size": 1.05, "brow_height_deg": 1.0, "brow_ridge": 0.8, "cheek_fullness": 1.0, "cheekbones": 1.2},
    {"head_width": 1.05, "head_depth": 1.03, "face_width": 1.07, "face_length": 0.95, "jaw_width": 1.15, "chin": 1.2,
         "nose_length": 0.95, "nose_width": 1.20, "nose_projection": 0.95, "lip_thickness": 0.85, "mouth_width": 1.08,
         "eye_spacing": 1.04, "eye_size": 0.95, "brow_height_deg": -1.0, "brow_ridge": 1.35, "cheek_fullness": 1.15},
    {"head_width": 0.97, "face_width": 0.98, "face_length": 1.02, "jaw_width": 0.95, "chin": 0.85, "nose_length": 0.90,
         "nose_width": 0.95, "nose_projection": 0.85, "lip_thickness": 1.30, "mouth_width": 1.05, "eye_spacing": 1.02,
         "eye_size": 1.08, "brow_height_deg": 1.5, "brow_ridge": 0.75, "cheek_fullness": 1.25, "cheekbones": 0.9},
    {"head_width": 1.02, "head_depth": 0.97, "face_width": 1.03, "face_length": 1.08, "jaw_width": 1.08, "chin": 1.30,
         "nose_length": 1.15, "nose_width": 1.00, "nose_projection": 1.20, "lip_thickness": 0.90, "mouth_width": 0.96,
         "eye_spacing": 0.98, "eye_size": 0.97, "brow_height_deg": -0.5, "brow_ridge": 1.25, "cheek_fullness": 0.8,
         "cheekbones": 1.25},
    {"head_width": 0.93, "face_width": 0.92, "face_length": 0.97, "jaw_width": 0.88, "chin": 0.95, "nose_length": 0.88,
         "nose_width": 0.88, "nose_projection": 0.90, "lip_thickness": 1.10, "mouth_width": 0.90, "eye_spacing": 1.05,
         "eye_size": 1.10, "brow_height_deg": 2.0, "brow_ridge": 0.7, "cheek_fullness": 1.05, "cheekbones": 1.1},
    {"head_width": 1.06, "head_depth": 1.05, "face_width": 1.05, "face_length": 1.04, "jaw_width": 1.12, "chin": 1.05,
         "nose_length": 1.05, "nose_width": 1.25, "nose_projection": 1.05, "lip_thickness": 1.05, "mouth_width": 1.12,
         "eye_spacing": 1.00, "eye_size": 0.92, "brow_height_deg": -1.5, "brow_ridge": 1.4, "cheek_fullness": 1.35,
         "cheekbones": 0.85},
    {"head_width": 0.99, "face_width": 0.97, "face_length": 0.93, "jaw_width": 1.00, "chin": 0.80, "nose_length": 0.95,
         "nose_width": 1.10, "nose_projection": 0.80, "lip_thickness": 1.25, "mouth_width": 1.00, "eye_spacing": 0.95,
         "eye_size": 1.02, "brow_height_deg": 0.5, "brow_ridge": 0.9, "cheek_fullness": 1.10, "cheekbones": 1.0},
    # val
    {"head_width": 1.01, "face_width": 1.02, "face_length": 1.05, "jaw_width": 1.02, "chin": 1.15, "nose_length": 1.08,
         "nose_width": 0.95, "nose_projection": 1.12, "lip_thickness": 0.95, "mouth_width": 0.98, "eye_spacing": 1.01,
         "eye_size": 1.00, "brow_height_deg": 0.8, "brow_ridge": 1.1, "cheek_fullness": 0.95, "cheekbones": 1.15},
    {"head_width": 0.96, "face_width": 0.95, "face_length": 0.99, "jaw_width": 0.92, "chin": 0.90, "nose_length": 0.92,
         "nose_width": 1.05, "nose_projection": 0.92, "lip_thickness": 1.15, "mouth_width": 1.06, "eye_spacing": 1.03,
         "eye_size": 1.04, "brow_height_deg": -0.8, "brow_ridge": 0.85, "cheek_fullness": 1.2, "cheekbones": 0.95},
    # test (10 is the default head shipped with the engine)
    {"head_width": 1.00, "face_width": 1.00, "face_length": 1.00, "jaw_width": 1.00, "chin": 1.00, "nose_length": 1.00,
         "nose_width": 1.00, "nose_projection": 1.00, "lip_thickness": 1.05, "mouth_width": 1.00, "eye_spacing": 1.00,
         "eye_size": 1.00, "brow_height_deg": 0.0, "brow_ridge": 1.0, "cheek_fullness": 1.0, "cheekbones": 1.05},
    {"head_width": 1.04, "head_depth": 1.02, "face_width": 1.06, "face_length": 1.03, "jaw_width": 1.10, "chin": 1.20,
         "nose_length": 1.12, "nose_width": 1.15, "nose_projection": 1.08, "lip_thickness": 0.88, "mouth_width": 1.04,
         "eye_spacing": 0.96, "eye_size": 0.96, "brow_height_deg": -1.2, "brow_ridge": 1.3, "cheek_fullness": 0.85,
         "cheekbones": 1.2},
]
assert len(_IDENTITY_TABLE) == NUM_IDENTITIES


def subject_name(index: int) -> str:
    return f"synth_{int(index):02d}"


def identity(index: int) -> IdentityParams:
    """The index-th fixed identity (0-7 train, 8-9 val, 10-11 test)."""
    if not isinstance(index, (int, np.integer)) or not 0 <= int(index) < NUM_IDENTITIES:
        raise ValueError(f"identity index must be an integer in 0..{NUM_IDENTITIES - 1}, got {index!r}")
    return IdentityParams(name=subject_name(int(index)), **_IDENTITY_TABLE[int(index)])


# ----------------------------------------------------------------------------- head
@dataclass
class Head:
    """A built head: the topology (neutral vertices, faces, masks) plus what the rig needs.

    ``info`` holds per-vertex arrays (length V):
      theta, elev   canonical grid coordinates in degrees (inner mouth/eye vertices inherit
                    them from the lip/lid vertex they hang from; eyeballs: their eye centre)
      mouth_side    +1 above the lip line (upper lip side), -1 below, 0 on it (corners)
      eye_side      +1 above the eye line, -1 below, 0 elsewhere/corners
      kind          0 grid, 1 mouth interior ring, 2 eye closure, 3 eyeball
      ring          ring index for kind 1/2 (0 = the slit itself), -1 otherwise
      eye           -1 right eye (-X), +1 left eye (+X), 0 not near an eye
    ``landmarks`` holds named points (3,) and index arrays (see build_head).
    """
    params: IdentityParams
    topology: Topology
    info: dict[str, np.ndarray]
    landmarks: dict[str, Any]

    @property
    def vertices(self) -> np.ndarray:
        return self.topology.vertices

    @property
    def faces(self) -> np.ndarray:
        return self.topology.faces


def _smoothstep(x: np.ndarray, a: float, b: float) -> np.ndarray:
    t = np.clip((np.asarray(x, dtype=np.float64) - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2)


def _directions(theta_deg: np.ndarray, elev_deg: np.ndarray) -> np.ndarray:
    th = np.asarray(theta_deg) * DEG
    el = np.asarray(elev_deg) * DEG
    c = np.cos(el)
    return np.stack([c * np.sin(th), -c * np.cos(th), np.sin(el)], axis=-1)


def _ray_ellipsoid(d: np.ndarray, centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Distance from the origin along unit d to the ellipsoid surface (origin is inside)."""
    o = -centre / axes
    dd = d / axes
    a = np.sum(dd * dd, axis=-1)
    b = 2.0 * np.sum(o * dd, axis=-1)
    c = float(np.sum(o * o)) - 1.0
    return (-b + np.sqrt(np.maximum(b * b - 4 * a * c, 0.0))) / (2 * a)


def _ray_neck(d: np.ndarray, axis_y: float, radius: float, bottom_z: float,
              top_z: float = 0.0) -> np.ndarray:
    """Distance to a vertical cylinder (axis x=0, y=axis_y) between z=bottom_z and z=top_z."""
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = 2.0 * (-axis_y) * d[..., 1]
    c = axis_y ** 2 - radius ** 2
    t_cyl = (-b + np.sqrt(np.maximum(b * b - 4 * a * c, 0.0))) / (2 * np.maximum(a, 1e-12))
    t_cap = np.where(d[..., 2] < -1e-9, bottom_z / np.minimum(d[..., 2], -1e-9), np.inf)
    t_top = np.where(d[..., 2] > 1e-9, top_z / np.maximum(d[..., 2], 1e-9), np.inf)
    return np.minimum(np.minimum(t_cyl, t_cap), t_top)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (a - b) / k, 0.0, 1.0)
    return b + (a - b) * h + k * h * (1.0 - h)


def _radius(theta: np.ndarray, elev: np.ndarray, p: IdentityParams) -> np.ndarray:
    """Radial distance of the head surface along the grid direction (theta, elev), degrees."""
    d = _directions(theta, elev)
    skull = _ray_ellipsoid(d, np.array([0.0, 0.016, 0.022]),
                           np.array([0.074 * p.head_width, 0.097 * p.head_depth, 0.097]))
    face = _ray_ellipsoid(d, np.array([0.0, -0.012, -0.042]), np.array([0.061, 0.082, 0.089]))
    neck = _ray_neck(d, axis_y=0.020, radius=0.050, bottom_z=-0.19)
    r = _smax(_smax(skull, face, 0.012), neck, 0.02)
    return r + _features(np.asarray(theta, float), np.asarray(elev, float), p)


_NOSE_T = np.array([-27.0, -25.0, -23.5, -22.0, -20.0, -18.0, -15.0, -9.0, -3.0, 1.0, 4.0, 8.0])
_NOSE_A = np.array([0.0, 0.0015, 0.005, 0.0135, 0.0205, 0.0215, 0.0195, 0.0140, 0.0085, 0.0045, 0.003, 0.0])
_NOSE_W = np.array([6.5, 6.2, 5.9, 5.6, 5.2, 4.8, 4.3, 3.7, 3.4, 3.5, 4.0, 5.0])
_nose_amp = PchipInterpolator(_NOSE_T, _NOSE_A, extrapolate=False)
_nose_wid = PchipInterpolator(_NOSE_T, _NOSE_W, extrapolate=True)


def _lip_profile(tau: np.ndarray, peak_at: float, border_level: float) -> np.ndarray:
    """Lip cross-section over tau = distance from the lip line / lip height.

    Starts at 0.35 (the contact line sits a little back), rises to 1 at ``peak_at``, falls to
    ``border_level`` at the vermilion border (tau = 1, a crease), then fades into skin.
    """
    tau = np.asarray(tau, dtype=np.float64)
    rise = 0.35 + 0.65 * np.sin(0.5 * np.pi * np.clip(tau / peak_at, 0.0, 1.0))
    fall = 1.0 - (1.0 - border_level) * np.clip((tau - peak_at) / (1.0 - peak_at), 0.0, 1.0) ** 2
    skin = border_level * np.exp(-((np.maximum(tau - 1.0, 0.0) / 0.55) ** 2))
    return np.where(tau < peak_at, rise, np.where(tau <= 1.0, fall, skin))


def _lip_heights(th: np.ndarray, lt: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Upper/lower vermilion heights (degrees) across the mouth: tapered toward the corners,
    with a cupid's bow (two peaks either side of a small central dip) on the upper lip.
    Past the corners the values ramp back to the canonical heights (used by the row warp)."""
    a = np.abs(th)
    taper = np.clip(1.0 - (a / THETA_MOUTH) ** 2, 0.0, 1.0) ** 0.5
    base = np.where(a < THETA_MOUTH, 0.30 + 0.70 * taper,
                    0.30 + 0.70 * _smoothstep(a, THETA_MOUTH, THETA_MOUTH + 7.0))
    bow = 1.0 + 0.14 * np.exp(-0.5 * ((a - 3.2) / 1.8) ** 2) - 0.10 * np.exp(-0.5 * (a / 1.1) ** 2)
    scale = 1.0 + (lt ** 0.6 - 1.0) * (1.0 - _smoothstep(a, THETA_MOUTH + 3.0, THETA_MOUTH + 10.0))
    return HU0 * scale * base * bow, HL0 * scale * base


def _features(th: np.ndarray, t: np.ndarray, p: IdentityParams) -> np.ndarray:
    """Radial feature offsets (metres) in canonical grid coordinates (degrees)."""
    a = np.abs(th)
    off = np.zeros(np.broadcast(th, t).shape)
    # nose: ridge from the bridge to the tip, then the columella down to the lip
    ts = np.where(t > -26.0, -26.0 + (t + 26.0) / p.nose_length, t)
    amp = np.nan_to_num(_nose_amp(np.clip(ts, _NOSE_T[0], _NOSE_T[-1])), nan=0.0) * p.nose_projection
    wid = _nose_wid(np.clip(ts, _NOSE_T[0], _NOSE_T[-1])) * p.nose_width
    off += amp * np.exp(-(np.abs(th) / (1.12 * wid)) ** 2.1)
    # alae (nostril wings)
    ala_t = -21.5 - 1.5 * (p.nose_length - 1.0)
    off += 0.0090 * p.nose_width * _gauss(a, 5.6 * p.nose_width, 2.6) * _gauss(t, ala_t, 2.0)
    # muzzle: the mouth area stands forward of the cheeks
    off += 0.006 * _gauss(th, 0.0, 15.0) * _gauss(t, T_MOUTH, 10.0)
    # lips
    xi = th / THETA_MOUTH
    env = np.clip(1.0 - xi ** 2, 0.0, 1.0) ** 0.5
    env_soft = np.exp(-np.maximum(a - THETA_MOUTH * 0.85, 0.0) ** 2 / 8.0)
    lt = p.lip_thickness
    hu, hl = _lip_heights(th, lt)
    up_tau = (t - T_MOUTH) / hu
    lo_tau = (T_MOUTH - t) / hl
    upper = 0.0040 * lt * _lip_profile(np.maximum(up_tau, 0.0), 0.42, 0.5)
    lower = 0.0040 * lt * (0.35 + (1.12 * _lip_profile(np.maximum(lo_tau, 0.0), 0.45, 0.35) - 0.35)
                           * np.clip(lo_tau / 0.05, 0, 1) ** 0)
    lip = np.where(t >= T_MOUTH, upper, lower)
    off += lip * np.maximum(env, 0.0) * np.where(a < THETA_MOUTH, 1.0, env_soft * 0.0)
    # cupid's bow / philtrum: a shallow groove above the upper lip centre
    off -= 0.0012 * _gauss(th, 0.0, 1.6) * _gauss(t, T_MOUTH + hu * 1.6, 2.2)
    # mentolabial sulcus and chin
    off -= 0.0030 * _gauss(th, 0.0, 10.0) * _gauss(t, T_MOUTH - hl - 3.5, 2.5)
    off += (0.0065 * p.chin) * _gauss(th, 0.0, 8.5) * _gauss(t, -56.0, 6.0)
    # nasolabial folds: a groove from the nose wing to past the mouth corner
    s = np.clip((t - (-22.0)) / (-38.0 - (-22.0)), 0.0, 1.0)
    line_th = 8.5 + s * (19.0 - 8.5)
    on_seg = _smoothstep(t, -42.0, -38.0) * (1 - _smoothstep(t, -21.0, -19.0))
    off -= 0.0016 * _gauss(a, line_th, 1.6) * on_seg
    # eye sockets, brow ridge, cheekbones, cheeks, temples
    off -= 0.0070 * p.eye_size * _gauss(a, THETA_EYE, 8.5) * _gauss(t, T_EYE, 6.0)
    tb = BROW_T + p.brow_height_deg + _brow_arch(a)
    off += 0.0062 * p.brow_ridge * _gauss(t, tb, 3.6) * np.exp(-(np.maximum(a - 28.0, 0) / 7.0) ** 2)
    off += 0.0075 * p.cheekbones * _gauss(a, 33.0, 10.0) * _gauss(t, -9.0, 6.5)
    off += 0.0055 * p.cheek_fullness * _gauss(a, 27.0, 11.0) * _gauss(t, -25.0, 8.5)
    # jaw line: the lower face narrows under the cheeks toward the chin
    off -= 0.0035 * _gauss(a, 38.0, 12.0) * _gauss(t, -48.0, 7.0)
    off -= 0.0040 * _gauss(a, 58.0, 9.0) * _gauss(t, 16.0, 8.0)
    # ears: a ridge each side
    off += 0.0120 * _gauss(a, 93.0, 3.5) * _gauss(t, -4.0, 8.5)
    return off


def _eye_open(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lid heights (degrees) over |theta| inside the eye (almond shape)."""
    tau = np.clip((a - THETA_EYE) / (0.5 * (THETA_EYE_OUT - THETA_EYE_IN)), -1.0, 1.0)
    base = np.clip(1.0 - tau ** 2, 0.0, 1.0)
    up = 4.2 * base ** 0.6 * (1.0 - 0.18 * tau)
    lo = 3.1 * base ** 0.75 * (1.0 + 0.12 * tau)
    inside = (a > THETA_EYE_IN) & (a < THETA_EYE_OUT)
    return np.where(inside, up, 0.0), np.where(inside, lo, 0.0)


HU0 = float(ROWS[ROW_MOUTH + 4] - T_MOUTH)   # canonical upper vermilion height: 4 rows
HL0 = float(T_MOUTH - ROWS[ROW_MOUTH - 5])   # canonical lower vermilion height: 5 rows
BROW_T = 10.5          # canonical brow elevation (degrees)


def _brow_arch(a: np.ndarray) -> np.ndarray:
    """Extra brow elevation (degrees) over |theta|: highest above the middle of the eye."""
    return 2.2 * np.exp(-0.5 * ((np.asarray(a) - 19.0) / 8.0) ** 2)


MOUTH_GAP_DEG = 0.1   # neutral lips rest almost closed (~0.3 mm apart)


def _warp_elev(theta: np.ndarray, elev: np.ndarray, side_eye: np.ndarray,
               side_mouth: np.ndarray, lip_thickness: float = 1.0) -> np.ndarray:
    """Open the eye slits (almond) and the mouth slit by pushing rows away from the cut;
    squeeze the lip rows so the vermilion borders (and brows) follow grid rows exactly."""
    a = np.abs(theta)
    # lips: canonical rows dm in [0, HU0] map onto [0, hu(theta)], then blend back over 4 deg
    hu, hl = _lip_heights(theta, lip_thickness)
    dm0 = elev - T_MOUTH

    def squeeze(d: np.ndarray, h0: float, h: np.ndarray, band: float = 4.0) -> np.ndarray:
        k = h / h0
        inner = d * k
        outer = k * h0 + (d - h0) * (h0 + band - k * h0) / band
        return np.where(d <= h0, inner, np.where(d <= h0 + band, outer, d))

    up_side = (side_mouth > 0) | ((side_mouth == 0) & (dm0 > 0))
    lo_side = (side_mouth < 0) | ((side_mouth == 0) & (dm0 < 0))
    elev = np.where(up_side & (dm0 >= 0), T_MOUTH + squeeze(np.maximum(dm0, 0), HU0, hu), elev)
    elev = np.where(lo_side & (dm0 <= 0), T_MOUTH - squeeze(np.maximum(-dm0, 0), HL0, hl), elev)
    up, lo = _eye_open(a)
    W = 8.0
    de = elev - T_EYE
    g_e = np.clip(1.0 - np.abs(de) / W, 0.0, 1.0) ** 1.5
    out = elev + np.where(side_eye > 0, up * g_e, 0.0) - np.where(side_eye < 0, lo * g_e, 0.0)
    # bend the rows around the brows into the brow arch (brow ridge and colour follow rows)
    g_b = _smoothstep(elev, 3.0, 8.0) * (1.0 - _smoothstep(elev, 16.0, 28.0))
    out = out + _brow_arch(a) * g_b
    dm = elev - T_MOUTH
    in_mouth = np.clip(1.0 - (theta / THETA_MOUTH) ** 2, 0.0, 1.0) ** 0.5
    g_m = np.clip(1.0 - np.abs(dm) / 3.0, 0.0, 1.0)
    gap = MOUTH_GAP_DEG * in_mouth * g_m
    out = out + np.where(side_mouth > 0, gap, 0.0) - np.where(side_mouth < 0, gap, 0.0)
    return out


def _uv_sphere(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere with poles on -Y (front, the pupil) and +Y; outward-facing triangles."""
    verts = [np.array([0.0, -1.0, 0.0])]
    for i in range(1, nlat):
        polar = np.pi * i / nlat
        for j in range(nlon):
            az = 2 * np.pi * j / nlon
            verts.append(np.array([np.sin(polar) * np.cos(az), -np.cos(polar), np.sin(polar) * np.sin(az)]))
    verts.append(np.array([0.0, 1.0, 0.0]))
    V = np.array(verts)
    faces = []
    ring = lambda i, j: 1 + (i - 1) * nlon + (j % nlon)
    for j in range(nlon):
        faces.append([0, ring(1, j + 1), ring(1, j)])
    for i in range(1, nlat - 1):
        for j in range(nlon):
            a, b = ring(i, j), ring(i, j + 1)
            c, d = ring(i + 1, j + 1), ring(i + 1, j)
            faces += [[a, b, c], [a, c, d]]
    last = len(V) - 1
    for j in range(nlon):
        faces.append([last, ring(nlat - 1, j), ring(nlat - 1, j + 1)])
    F = np.array(faces, dtype=np.int64)
    # make outward: check one triangle's normal against its centroid direction
    tri = V[F]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if np.sum(n * tri.mean(axis=1)) < 0:
        F = F[:, ::-1]
    return V, F


@dataclass
class _Builder:
    """Accumulates vertices (with their canonical attributes) and faces."""
    theta: list = field(default_factory=list)
    elev: list = field(default_factory=list)
    mouth_side: list = field(default_factory=list)
    eye_side: list = field(default_factory=list)
    kind: list = field(default_factory=list)
    ring: list = field(default_factory=list)
    eye: list = field(default_factory=list)
    faces: list = field(default_factory=list)

    def add(self, theta: float, elev: float, ms: int = 0, es: int = 0, kind: int = 0,
            ring: int = -1, eye: int = 0) -> int:
        self.theta.append(theta)
        self.elev.append(elev)
        self.mouth_side.append(ms)
        self.eye_side.append(es)
        self.kind.append(kind)
        self.ring.append(ring)
        self.eye.append(eye)
        return len(self.theta) - 1


def _tube(b: _Builder, faces_so_far: np.ndarray, loop: list[int], n_new: int, kind: int,
          attrs_of: list[dict]) -> list[list[int]]:
    """Extend a hole's boundary loop inward by n_new rings and close it with a centre vertex.

    Orientation is chosen to be consistent with the faces that already use the loop edges.
    Returns the rings (ring 0 = the given loop; last element = [centre]).
    """
    edges = set(map(tuple, faces_so_far[:, [0, 1]].tolist())) | set(map(tuple, faces_so_far[:, [1, 2]].tolist())) \
        | set(map(tuple, faces_so_far[:, [2, 0]].tolist()))
    forward_used = (loop[0], loop[1]) in edges
    L = len(loop)
    rings = [loop]
    for k in range(1, n_new + 1):
        rings.append([b.add(**{**attrs_of[j], "ring": k, "kind": kind}) for j in range(L)])
    centre = b.add(**{**attrs_of[0], "ms": 0, "es": 0, "ring": n_new + 1, "kind": kind})
    rings.append([centre])
    for k in range(n_new):
        p, q = rings[k], rings[k + 1]
        for j in range(L):
            j1 = (j + 1) % L
            if forward_used:
                b.faces += [[p[j1], p[j], q[j]], [p[j1], q[j], q[j1]]]
            else:
                b.faces += [[p[j], p[j1], q[j1]], [p[j], q[j1], q[j]]]
    q = rings[n_new]
    for j in range(L):
        j1 = (j + 1) % L
        b.faces.append([q[j1], q[j], centre] if forward_used else [q[j], q[j1], centre])
    return rings


def _build_layout() -> dict[str, Any]:
    """Everything topological: vertex attributes, faces, index bookkeeping. Identity-free."""
    b = _Builder()
    NC = len(COLUMNS)
    NR = len(ROWS)
    c_ml, c_mr = _col(-THETA_MOUTH), _col(THETA_MOUTH)
    eye_cols = {+1: (_col(THETA_EYE_IN), _col(THETA_EYE_OUT)), -1: (_col(-THETA_EYE_OUT), _col(-THETA_EYE_IN))}
    up = np.full((NR, NC), -1, dtype=np.int64)   # copy used by faces above the row
    dn = np.full((NR, NC), -1, dtype=np.int64)   # copy used by faces below the row
    bottom = b.add(0.0, -90.0, ms=-1)
    for r in range(1, NR - 1):
        t = ROWS[r]
        for c in range(NC):
            th = COLUMNS[c]
            ms = 1 if t > T_MOUTH else (-1 if t < T_MOUTH else 0)
            es = 1 if t > T_EYE else (-1 if t < T_EYE else 0)
            eye = 0
            for s, (c0, c1) in eye_cols.items():
                if c0 - 3 <= c <= c1 + 3 and abs(t - T_EYE) < 14:
                    eye = s
            if r == ROW_MOUTH and c_ml < c < c_mr:
                up[r, c] = b.add(th, t, ms=1, es=es)
                dn[r, c] = b.add(th, t, ms=-1, es=es)
                continue
            cut_eye = r == ROW_EYE and any(c0 < c < c1 for c0, c1 in eye_cols.values())
            if cut_eye:
                up[r, c] = b.add(th, t, ms=ms, es=1, eye=eye)
                dn[r, c] = b.add(th, t, ms=ms, es=-1, eye=eye)
                continue
            v = b.add(th, t, ms=ms, es=(es if eye else 0) if r != ROW_EYE else 0, eye=eye)
            up[r, c] = dn[r, c] = v
    top = b.add(0.0, 90.0, ms=1)
    for c in range(NC):
        c1 = (c + 1) % NC
        b.faces.append([bottom, dn[1, c1], dn[1, c]])
        for r in range(1, NR - 2):
            a_, b_, cc, d = up[r, c], up[r, c1], dn[r + 1, c1], dn[r + 1, c]
            b.faces += [[a_, b_, cc], [a_, cc, d]]
        b.faces.append([up[NR - 2, c], up[NR - 2, c1], top])
    grid_faces = np.array(b.faces, dtype=np.int64)

    def attrs(v: int) -> dict:
        return {"theta": b.theta[v], "elev": b.elev[v], "ms": b.mouth_side[v], "es": b.eye_side[v], "eye": b.eye[v]}

    # mouth slit loop: left corner, upper lip (left -> right), right corner, lower lip (right -> left)
    rm = ROW_MOUTH
    mcols = list(range(c_ml + 1, c_mr))
    mloop = [up[rm, c_ml]] + [up[rm, c] for c in mcols] + [up[rm, c_mr]] + [dn[rm, c] for c in mcols[::-1]]
    mouth_rings = _tube(b, grid_faces, mloop, MOUTH_RINGS, kind=1, attrs_of=[attrs(v) for v in mloop])
    eye_rings = {}
    for s, (c0, c1) in eye_cols.items():
        re = ROW_EYE
        ecols = list(range(c0 + 1, c1))
        eloop = [up[re, c0]] + [up[re, c] for c in ecols] + [up[re, c1]] + [dn[re, c] for c in ecols[::-1]]
        allf = np.array(b.faces, dtype=np.int64)
        eye_rings[s] = _tube(b, allf, eloop, 1, kind=2, attrs_of=[{**attrs(v), "eye": s} for v in eloop])
    # eyeballs
    sv, sf = _uv_sphere(*EYE_SPHERE)
    eyeballs = {}
    for s in (-1, 1):
        base = len(b.theta)
        for _ in range(len(sv)):
            b.add(s * THETA_EYE, T_EYE, ms=1, es=0, kind=3, eye=s)
        b.faces += (sf + base).tolist()
        eyeballs[s] = np.arange(base, base + len(sv))
    info = {"theta": np.array(b.theta), "elev": np.array(b.elev), "mouth_side": np.array(b.mouth_side),
                "eye_side": np.array(b.eye_side), "kind": np.array(b.kind), "ring": np.array(b.ring),
                "eye": np.array(b.eye)}
    return {"info": info, "faces": np.array(b.faces, dtype=np.int64), "up": up, "dn": dn,
                "mouth_cols": np.array(mcols), "mouth_rings": mouth_rings, "eye_rings": eye_rings,
                "eye_cols": eye_cols, "eyeballs": eyeballs, "sphere": sv, "corners": (up[rm, c_ml], up[rm, c_mr])}


_LAYOUT: dict[str, Any] | None = None


def _layout() -> dict[str, Any]:
    global _LAYOUT
    if _LAYOUT is None:
        _LAYOUT = _build_layout()
    return _LAYOUT


def _identity_fields(v: np.ndarray, p: IdentityParams, eye_centres: dict[int, np.ndarray],
                     mouth_z: float) -> np.ndarray:
    """Smooth 3D deformations for proportions (widths, lengths, spacing)."""
    out = v.copy()
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    front = _smoothstep(-y, -0.02, 0.05)
    # eye spacing: move each eye region sideways (rigidly near the eye)
    for s, c in eye_centres.items():
        d = np.sqrt(((x - c[0]) / 0.026) ** 2 + ((z - c[2]) / 0.02) ** 2)
        w = 1.0 - _smoothstep(d, 0.8, 1.8)
        w *= (np.sign(x) == s)
        out[:, 0] += w * (p.eye_spacing - 1.0) * abs(c[0])
    # mouth width: local x scale around the mouth
    g = np.exp(-((x / 0.04) ** 2 + ((z - mouth_z) / 0.022) ** 2)) * front
    out[:, 0] *= 1.0 + (p.mouth_width - 1.0) * g
    # jaw width: x scale of the lower face
    low = _smoothstep(-z, 0.0, 0.08) * _smoothstep(z, -0.2, -0.13)
    out[:, 0] *= 1.0 + (p.jaw_width - 1.0) * low
    # face width: x scale of the whole face front
    out[:, 0] *= 1.0 + (p.face_width - 1.0) * (0.5 + 0.5 * front)
    # face length: stretch everything below the eyes
    zb = out[:, 2]
    below = np.where(zb < 0.0, zb, 0.0) * _smoothstep(zb, -0.19, -0.12)
    out[:, 2] = zb + (p.face_length - 1.0) * below
    return out


def build_head(params: IdentityParams | int | None = None) -> Head:
    """Build the head for one identity. Topology (faces, masks) is the same for every identity."""
    if params is None:
        params = identity(DEFAULT_IDENTITY)
    elif isinstance(params, (int, np.integer)):
        params = identity(int(params))
    if not isinstance(params, IdentityParams):
        raise TypeError(f"build_head expects IdentityParams or an identity index, got {type(params).__name__}")
    p = params
    L = _layout()
    info = L["info"]
    V = len(info["theta"])
    th, el = info["theta"], info["elev"]
    grid = info["kind"] == 0
    warped = _warp_elev(th, el, info["eye_side"], info["mouth_side"], p.lip_thickness)
    pos = np.zeros((V, 3))
    dirs = _directions(th[grid], warped[grid])
    pos[grid] = dirs * _radius(th[grid], warped[grid], p)[:, None]

    # eyes: centre behind the socket surface, lids conform to a sphere around the eyeball
    r_eye = 0.0118 * p.eye_size
    rho = r_eye + 0.0013
    eye_centres = {}
    for s in (-1, 1):
        dc = _directions(np.array([s * THETA_EYE]), np.array([T_EYE]))[0]
        surf = dc * _radius(np.array([s * THETA_EYE]), np.array([T_EYE]), p)[0]
        c = surf + np.array([0.0, r_eye - 0.0028, 0.0])
        eye_centres[s] = c
        sel = grid & (info["eye"] == s)
        q = np.sqrt(((np.abs(th[sel]) - THETA_EYE) / 12.5) ** 2 + ((warped[sel] - T_EYE) / 6.5) ** 2)
        w = 1.0 - _smoothstep(q, 0.75, 1.35)
        P = pos[sel]
        d2 = (P[:, 0] - c[0]) ** 2 + (P[:, 2] - c[2]) ** 2
        ys = c[1] - np.sqrt(np.maximum(rho ** 2 - d2, 0.0))
        P[:, 1] = (1 - w) * P[:, 1] + w * np.minimum(ys, P[:, 1] + 0.004)
        pos[sel] = P
    # eye closures (behind the lids, inside the eyeball) and eyeballs
    for s, rings in L["eye_rings"].items():
        c = eye_centres[s]
        r0 = np.array(rings[0])
        pos[rings[1]] = c + (pos[r0] - c) * ((rho - 0.003) / np.maximum(np.linalg.norm(pos[r0] - c, axis=1), 1e-9))[:, None]
        pos[rings[2][0]] = c
        pos[L["eyeballs"][s]] = c + L["sphere"] * r_eye
    # mouth interior rings from the slit loop
    mr = L["mouth_rings"]
    loop = np.array(mr[0])
    P0 = pos[loop]
    cx = 0.5 * (P0[:, 0].max() + P0[:, 0].min())
    half = 0.5 * (P0[:, 0].max() - P0[:, 0].min())
    xi = (P0[:, 0] - cx) / half
    env = np.sqrt(np.clip(1 - xi ** 2, 0.0, 1.0))
    side = info["mouth_side"][loop].astype(float)
    # per ring: (back, vertical offset of the upper side, back, vertical of the lower side,
    # x shrink). Ring 1 is the inner lip roll, 2-3 the teeth (upper incisal edge hangs just
    # below the lip line, lower edge sits behind it), 4-5 the mouth cavity.
    spec = [(0.0030, 0.0020, 0.0030, -0.0020, 0.97),
            (0.0045, 0.0012, 0.0065, -0.0012, 0.93),
            (0.0052, -0.0040, 0.0072, 0.0025, 0.90),
            (0.0200, 0.0140, 0.0200, -0.0140, 0.80),
            (0.0360, 0.0120, 0.0360, -0.0120, 0.62)]
    upper = side > 0
    for k, (dyu, dzu, dyl, dzl, sx) in enumerate(spec, start=1):
        Pk = P0.copy()
        Pk[:, 0] = cx + (P0[:, 0] - cx) * sx
        Pk[:, 1] += np.where(upper, dyu, np.where(side < 0, dyl, 0.5 * (dyu + dyl)))
        shape = env if k in TEETH_RINGS else (0.25 + 0.75 * env)
        Pk[:, 2] += np.where(upper, dzu, np.where(side < 0, dzl, 0.0)) * shape
        pos[mr[k]] = Pk
    pos[mr[-1][0]] = np.array([cx, P0[:, 1].mean() + 0.044, P0[:, 2].mean()])

    mouth_z = float(P0[:, 2].mean())
    pos = _identity_fields(pos, p, eye_centres, mouth_z)
    # recompute eye centres after the identity fields moved the eyeballs
    eye_centres = {s: pos[L["eyeballs"][s]].mean(axis=0) for s in (-1, 1)}

    masks = _masks(L, info, warped)
    topo = Topology(pos.astype(np.float32), L["faces"], masks, fps=30.0, name="synthtalk_head")
    up_inner, lo_inner = masks["lip_upper_inner"], masks["lip_lower_inner"]
    corners = np.array(L["corners"], dtype=np.int64)
    landmarks: dict[str, Any] = {
        "mouth_corners": corners,                       # [right (-X), left (+X)]
        "mouth_centre": 0.5 * (pos[up_inner].mean(0) + pos[lo_inner].mean(0)),
        "eye_centres": {s: eye_centres[s] for s in (-1, 1)},  # -1 right eye, +1 left eye
        "eye_radius": float(r_eye),
        "lid_radius": float(rho),
        # temporomandibular joint axis (jaw pivot): in front of the ears, below eye level
        "jaw_pivot": np.array([0.0, 0.012, -0.028]) * np.array([1, p.head_depth, 1.0]),
        "nose_tip": pos[int(np.argmin(pos[:, 1] + 1e3 * (np.abs(pos[:, 0]) > 0.004)))].copy(),
    }
    info_out = {**info, "elev_warped": warped}
    return Head(params=p, topology=topo, info=info_out, landmarks=landmarks)


def _masks(L: dict[str, Any], info: dict[str, np.ndarray], warped: np.ndarray) -> dict[str, np.ndarray]:
    th, el, kind, ring = info["theta"], info["elev"], info["kind"], info["ring"]
    a = np.abs(th)
    grid = kind == 0
    rm = ROW_MOUTH
    mcols = L["mouth_cols"]
    up_inner = L["up"][rm, mcols]
    lo_inner = L["dn"][rm, mcols]
    lt_top, lt_bot = T_MOUTH + 7.5, T_MOUTH - 8.5
    lips = np.nonzero((grid & (a <= THETA_MOUTH + 2.5) & (el <= lt_top) & (el >= lt_bot))
                      | ((kind == 1) & (ring <= 1)))[0]
    # the row warp makes the vermilion borders grid rows: a canonical band is the red of the lips
    vermilion = np.nonzero((grid & (a < THETA_MOUTH) & (el <= T_MOUTH + HU0 + 0.01)
                            & (el >= T_MOUTH - HL0 - 0.01)) | ((kind == 1) & (ring <= 1)))[0]
    teeth = np.nonzero((kind == 1) & np.isin(ring, TEETH_RINGS) & (info["mouth_side"] != 0))[0]
    mouth_interior = np.setdiff1d(np.nonzero((kind == 1) & (ring >= 2))[0], teeth)
    eyeballs = np.concatenate([L["eyeballs"][s] for s in (-1, 1)])
    sv = L["sphere"]
    iris_local = np.nonzero(sv[:, 1] < -0.80)[0]
    iris = np.concatenate([L["eyeballs"][s][iris_local] for s in (-1, 1)])
    eye_closure = np.nonzero(kind == 2)[0]
    lid_band = grid & (info["eye"] != 0) & (a > THETA_EYE_IN - 1.5) & (a < THETA_EYE_OUT + 1.5) \
        & (np.abs(el - T_EYE) < 7.0)
    eyelids = np.union1d(np.nonzero(lid_band)[0], eye_closure)
    # rows near the brows are bent into the brow arch by _warp_elev, so a canonical band is arched
    brows = np.nonzero(grid & (a > 5.0) & (a < 31.0) & (el > BROW_T - 1.8) & (el < BROW_T + 1.5))[0]
    face = np.nonzero((grid & (a < 75.0) & (el > -62.0) & (el < 32.0)) | (kind > 0))[0]
    upper_face = np.nonzero((grid & (a < 75.0) & (el > -15.0) & (el < 32.0)) | (kind >= 2))[0]
    upper_face = np.setdiff1d(upper_face, lips)
    eye_l = np.nonzero(info["eye"] == 1)[0]
    eye_r = np.nonzero(info["eye"] == -1)[0]
    return {
        "lips": lips, "vermilion": vermilion, "face": face, "upper_face": upper_face, "eyelids": eyelids,
        "lip_upper_inner": up_inner, "lip_lower_inner": lo_inner,
        "mouth_interior": mouth_interior, "teeth": teeth, "eyeballs": eyeballs, "iris": iris,
        "brows": brows, "eye_region_l": eye_l, "eye_region_r": eye_r,
    }


def default_head() -> Head:
    """The head shipped as ``engine/assets/default_head.obj`` (test identity 10)."""
    return build_head(identity(DEFAULT_IDENTITY))


def export_default_head(path: str | os.PathLike | None = None) -> str:
    """Write the default head OBJ + ``.masks.json`` sidecar (atomic, via Topology.save)."""
    if path is None:
        path = os.path.join(os.path.dirname(__file__), "..", "..", "engine", "assets", "default_head.obj")
    path = os.path.normpath(os.fspath(path))
    default_head().topology.save(path)
    return path


if __name__ == "__main__":  # pragma: no cover - manual export
    print(export_default_head())

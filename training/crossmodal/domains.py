"""The two image domains of paper 001 (Sec. 3.1, 4.1), made from what Parley has.

* **R ("real")** -- SynthTalk talking-face clips of a few identities, rendered as mouth-region
  images with one *look* (camera, light, palette, sensor noise).  The transcoder sees these only
  as images + audio; their meshes are never a training target (they exist only because the
  "video" is rendered from them).
* **S ("synthetic")** -- one other identity (the default head, test identity 10) posed by random
  sparse combinations of the rig's mouth controls (the paper's range-of-motion / FACS renders),
  each image with its mesh (stored as the 13 rig controls that re-pose it exactly), rendered
  with a different look.
* **neutral** images of both (all controls at zero): the de-neutralisation anchors of eq. 1.

Be plain about the gap: R and S here are the same procedural renderer with a different camera,
light, palette and noise -- far closer than real video versus a CG character, so this tests the
machinery of the method, not its ability to bridge real and rendered faces.

Images are ``size x size`` RGB uint8 crops of the mouth region (nose base to chin), rendered
with :func:`engine.render.render_camera` (2x supersampled).  The blink and brow controls are
never set in S: a mouth crop cannot see them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.render import render_camera

__all__ = [
    "LOOK_R",
    "LOOK_S",
    "MOUTH_CONTROLS",
    "Look",
    "MouthCamera",
    "camera_rotation",
    "mouth_camera",
    "render_look",
    "sample_sparse_controls",
]

#: rig controls visible in a mouth crop (training.synthtalk.rig.CONTROLS order, first 9)
MOUTH_CONTROLS = ["jaw_open", "lips_close", "lips_press", "pucker", "funnel", "stretch", "lower_lip_tuck",
                  "upper_lip_raise", "smile"]


@dataclass(frozen=True)
class Look:
    """How one domain is photographed: camera pose and crop, light, palette, noise."""

    name: str
    yaw_deg: float = 0.0              # camera turned about the vertical axis (around the mouth)
    pitch_deg: float = 0.0            # camera raised (+) or lowered about the left-right axis
    crop_m: float = 0.09              # width of the square crop in metres
    drop_m: float = 0.012             # crop centre this far below the lips' centre (shows the chin)
    key_light: tuple[float, float, float] = (-0.45, -0.7, 0.55)
    light_weights: tuple[float, float, float, float] = (0.22, 0.50, 0.38, 0.10)
    skin: tuple[float, float, float] = (0.86, 0.68, 0.58)
    regions: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    background: tuple[float, float, float] = (0.93, 0.94, 0.96)
    noise_std: float = 0.0            # Gaussian sensor noise, in uint8 levels


LOOK_R = Look(name="R", noise_std=3.0,
              regions={"vermilion": (0.74, 0.42, 0.42), "mouth_interior": (0.22, 0.06, 0.07),
                       "teeth": (0.93, 0.90, 0.82)})
LOOK_S = Look(name="S", yaw_deg=8.0, pitch_deg=-5.0, crop_m=0.082, drop_m=0.010,
              key_light=(0.6, -0.6, 0.3), light_weights=(0.30, 0.35, 0.45, 0.20),
              skin=(0.62, 0.70, 0.80),
              regions={"vermilion": (0.80, 0.30, 0.45), "mouth_interior": (0.08, 0.05, 0.20),
                       "teeth": (0.98, 0.98, 1.00)},
              background=(0.25, 0.27, 0.30), noise_std=0.0)


@dataclass(frozen=True)
class MouthCamera:
    """A look's camera fixed for one identity: rotation pivot, crop centre, scale, triangles."""

    pivot: np.ndarray       # (3,) rotation centre (the neutral lips' centre)
    centre: np.ndarray      # (2,) image centre in rotated (x, z)
    scale: float            # pixels per metre
    faces: np.ndarray       # (F', 3) triangles the crop can show
    colors: np.ndarray      # (V, 3) vertex colours of the look


def camera_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    a, b = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    rz = np.array([[np.cos(a), np.sin(a), 0.0], [-np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    return rx @ rz


def mouth_camera(template: np.ndarray, topology: Any, look: Look, size: int) -> MouthCamera:
    """Frame ``look``'s mouth crop on one identity's neutral ``template`` (V, 3)."""
    lips = np.asarray(topology.masks["lips"], dtype=np.int64)
    pivot = template[lips].mean(axis=0)
    rot = (template - pivot) @ camera_rotation(look.yaw_deg, look.pitch_deg).T
    centre = np.array([0.0, -look.drop_m])
    # triangles near the crop (the jaw drops up to ~3 cm); back faces are culled by the rasteriser
    half = look.crop_m * 0.75
    near = (np.abs(rot[:, 0]) < half) & (rot[:, 2] < half) & (rot[:, 2] > -half - 0.035)
    faces = np.asarray(topology.faces, dtype=np.int64)
    faces = faces[near[faces].any(axis=1)]
    colors = np.tile(np.asarray(look.skin, dtype=np.float64), (len(template), 1))
    for name, rgb in look.regions.items():
        idx = topology.masks.get(name)
        if idx is not None and len(idx):
            colors[np.asarray(idx, dtype=np.int64)] = rgb
    return MouthCamera(pivot=pivot, centre=centre, scale=size / look.crop_m, faces=faces, colors=colors)


def render_look(frames: np.ndarray, camera: MouthCamera, look: Look, size: int,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """Vertex frames ``(T, V, 3)`` of one identity -> uint8 images ``(T, size, size, 3)`` in ``look``."""
    frames = np.asarray(frames, dtype=np.float64)
    rot = (frames - camera.pivot) @ camera_rotation(look.yaw_deg, look.pitch_deg).T
    imgs = render_camera(rot, camera.faces, camera.colors, size=size, centre=camera.centre, scale=camera.scale,
                         supersample=2, background=look.background, key_light=look.key_light,
                         light_weights=look.light_weights)
    if look.noise_std > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        noisy = imgs.astype(np.float32) + rng.normal(0.0, look.noise_std, imgs.shape).astype(np.float32)
        imgs = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return imgs


def sample_sparse_controls(n: int, rng: np.random.Generator, num_controls: int = 13,
                           max_active: int = 6, neutral_share: float = 0.05) -> np.ndarray:
    """Range-of-motion poses: ``(n, num_controls)`` rig weights, each row a sparse mix.

    Each pose activates ``k`` of the 9 mouth controls (``k`` uniform in 1..``max_active``; speech in
    SynthTalk has 2-6 active at once) at weights uniform in (0, 1]; ``neutral_share`` of the rows
    stay all-zero.  Blinks and brows stay 0 (invisible in a mouth crop).
    """
    W = np.zeros((n, num_controls), dtype=np.float32)
    for i in range(n):
        if rng.random() < neutral_share:
            continue
        k = int(rng.integers(1, max_active + 1))
        which = rng.choice(len(MOUTH_CONTROLS), size=k, replace=False)
        W[i, which] = rng.uniform(0.0, 1.0, size=k)
    return W

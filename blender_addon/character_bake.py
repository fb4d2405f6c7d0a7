"""Shape-key weights from the engine -> an Action of weight curves on an NLA track.

One Action per clip (``Parley <clip>``), holding one F-curve per driven key
(``key_blocks["jawOpen"].value``), placed as a strip on its own NLA track of the shape-key
datablock: several lines stack on separate tracks and can be moved, blended (strip blend type,
influence) and retimed (strip scale/repeat) like any NLA strip. Curves are **sparse** by default:
Ramer-Douglas-Peucker keys (:mod:`keyframes`) with Bezier auto-clamped handles, refined until
the drawn curve is within the tolerance of the engine's per-frame weight at every frame.
**Dense** (one linear key per frame) stays available.

All-or-nothing through :class:`bake.Rollback`, like the vertex bakes. Blender 3.4/4.2 (legacy
``Action.fcurves``), 4.4+ (slotted actions) and 5.0 (channelbags) are handled by
:func:`bake.ensure_fcurve` and by giving the strip the action's slot where strips have one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import bpy
import numpy as np

from . import bake, keyframes
from .character_files import Weights

MAX_REFINE_ROUNDS = 6


@dataclass
class WeightBakeOptions:
    clip: str
    start_frame: int = 1
    sparse: bool = True
    tolerance: float = 0.02  # weight units (slider 0..1)
    audio_path: str | None = None
    set_frame_range: bool = False
    set_fps: float | None = None


def _data_path(name: str) -> str:
    esc = bpy.utils.escape_identifier(name) if hasattr(bpy.utils, "escape_identifier") else name.replace('"', '\\"')
    return f'key_blocks["{esc}"].value'


def _write_curve(fc: bpy.types.FCurve, frames: np.ndarray, values: np.ndarray, opts: WeightBakeOptions) -> int:
    """Keys on ``fc``; returns how many."""
    kp = fc.keyframe_points
    if not opts.sparse:
        bake.set_keyframes(fc, frames, values)
        for p in kp:
            p.interpolation = "LINEAR"
        fc.update()
        return len(kp)
    keys = keyframes.rdp_keys(values, opts.tolerance)
    for _ in range(MAX_REFINE_ROUNDS):
        if len(kp):
            kp.clear()
        kp.add(len(keys))
        co = np.empty((len(keys), 2), dtype=np.float32)
        co[:, 0] = frames[keys]
        co[:, 1] = values[keys]
        kp.foreach_set("co", co.ravel())
        for p in kp:
            p.interpolation = "BEZIER"
            p.handle_left_type = p.handle_right_type = "AUTO_CLAMPED"
        fc.update()
        drawn = np.array([fc.evaluate(float(f)) for f in frames])
        more = keyframes.refine_keys(keys, drawn - values, opts.tolerance)
        if len(more) == len(keys):
            break
        keys = more
    return len(kp)


def bake_weights(scene: bpy.types.Scene, obj: bpy.types.Object, w: Weights, opts: WeightBakeOptions) -> bake.BakeResult:
    t0 = time.perf_counter()
    bake.check_target(obj)
    mesh = obj.data
    assert isinstance(mesh, bpy.types.Mesh)
    key = mesh.shape_keys
    if key is None:
        raise bake.BakeError(f"'{obj.name}' has no shape keys any more; nothing was changed.")
    missing = [n for n in w.names if key.key_blocks.get(n) is None]
    if missing:
        raise bake.BakeError(f"shape keys {missing[:5]} are gone from '{obj.name}'; nothing was changed.")
    T = int(w.weights.shape[0])
    if T < 1:
        raise bake.BakeError("the engine returned no frames; nothing was changed.")
    label = bake.unique_clip_label(obj, opts.clip)
    result = bake.BakeResult(clip=label, mode="WEIGHTS", frames=T, vertices=len(mesh.vertices),
                             start_frame=opts.start_frame)
    rb = bake.Rollback()
    key_name = key.name
    try:
        ad_created = key.animation_data is None
        ad = key.animation_data or key.animation_data_create()
        old_action = ad.action
        old_slot = getattr(ad, "action_slot", None)

        def restore_anim() -> None:
            k = bpy.data.shape_keys.get(key_name)
            if k is None or k.animation_data is None:
                return
            if ad_created:
                k.animation_data_clear()
                return
            k.animation_data.action = old_action
            if old_slot is not None and hasattr(k.animation_data, "action_slot"):
                try:
                    k.animation_data.action_slot = old_slot
                except (TypeError, RuntimeError, AttributeError):
                    pass

        rb.add("restore shape-key animation", restore_anim)
        action = bpy.data.actions.new(bake.MODIFIER_PREFIX + label)
        action_name = action.name
        rb.add(f"remove action {action_name}", lambda: bake._remove_action(action_name))
        frames = float(opts.start_frame) + np.arange(T, dtype=np.float64)
        n_keys = 0
        for j, name in enumerate(w.names):
            fc = bake.ensure_fcurve(key, action, _data_path(name))  # assigns the action to the key
            n_keys += _write_curve(fc, frames, w.weights[:, j].astype(np.float64), opts)
        # the NLA strip plays the clip; the active action goes back to what it was (none or the user's)
        ad.action = old_action
        if old_slot is not None and hasattr(ad, "action_slot"):
            try:
                ad.action_slot = old_slot
            except (TypeError, RuntimeError, AttributeError):
                pass
        track = ad.nla_tracks.new()
        track.name = f"{bake.MODIFIER_PREFIX}{label}"
        track_name = track.name

        def remove_track() -> None:
            k = bpy.data.shape_keys.get(key_name)
            t = k.animation_data.nla_tracks.get(track_name) if k is not None and k.animation_data else None
            if t is not None:
                k.animation_data.nla_tracks.remove(t)

        rb.add(f"remove NLA track {track_name}", remove_track)
        strip = track.strips.new(label, int(opts.start_frame), action)
        if hasattr(strip, "action_slot") and getattr(action, "slots", None) and len(action.slots):
            if strip.action_slot is None:
                strip.action_slot = action.slots[0]
        strip.blend_type = "REPLACE"
        strip.extrapolation = "NOTHING"  # outside its frames a line leaves the keys to other tracks
        result.action = action_name
        result.shape_keys = list(w.names)
        result.keyframes = n_keys  # type: ignore[attr-defined]
        result.nla_track = track_name  # type: ignore[attr-defined]
        if opts.audio_path:
            bake._add_sound_strip(scene, opts.audio_path, label, opts.start_frame, rb, result)
        if opts.set_frame_range:
            bake._set_frame_range(scene, opts.start_frame, result.end_frame, rb)
        if opts.set_fps:
            bake._set_fps(scene, opts.set_fps, rb)
    except BaseException as exc:
        failures = rb.run()
        if failures and isinstance(exc, Exception):
            raise bake.BakeError(f"{exc} (and rollback had problems: {'; '.join(failures)})") from exc
        raise
    rb.forget()
    result.seconds = time.perf_counter() - t0
    return result

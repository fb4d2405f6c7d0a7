"""Bake engine output (a PC2 file) into the scene: mesh cache or shape keys, sound strip, range.

Pure ``bpy`` (no operators, no context), so the interactive operator, the headless batch
script and the tests all run exactly this code. Every change is recorded in a
:class:`Rollback` as it is made; if anything fails half-way the recorded undo steps run in
reverse, so a failed bake leaves the scene (and the cache folder) exactly as it was.

Version notes (see the team's facts file): Blender 4.4+ stores keyframes in slotted
(layered) actions and 5.0 removed ``Action.fcurves``; :func:`ensure_fcurve` hides the
difference. ``SequenceEditor.sequences`` became ``strips`` (4.4+, the old name is gone in 5.0).
"""
from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bpy
import numpy as np

from . import formats

MODES = ("CACHE", "SHAPEKEYS")
MODIFIER_PREFIX = "Parley "


class BakeError(RuntimeError):
    """A bake cannot be done; the message says why in plain words and what to do."""


class TopologyError(BakeError):
    """The target object's mesh does not match the checkpoint's topology."""


# --------------------------------------------------------------------------------------
# rollback
# --------------------------------------------------------------------------------------
class Rollback:
    """Undo steps recorded while baking; :meth:`run` replays them newest first."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Any]]] = []

    def add(self, what: str, fn: Callable[[], Any]) -> None:
        self._steps.append((what, fn))

    def run(self) -> list[str]:
        """Undo everything; returns descriptions of steps that themselves failed (best effort)."""
        failures = []
        while self._steps:
            what, fn = self._steps.pop()
            try:
                fn()
            except Exception as exc:  # keep undoing the rest
                failures.append(f"{what}: {exc}")
        return failures

    def forget(self) -> None:
        self._steps.clear()


# --------------------------------------------------------------------------------------
# options / results
# --------------------------------------------------------------------------------------
@dataclass
class BakeOptions:
    """How to bake one clip onto one object."""

    clip: str
    mode: str = "CACHE"  # CACHE | SHAPEKEYS
    start_frame: int = 1
    relative_keys: bool = False  # SHAPEKEYS only: one relative key per frame (slow playback)
    audio_path: str | None = None  # add this sound as a strip at start_frame (None: no strip)
    set_frame_range: bool = False
    set_fps: float | None = None  # set the scene fps to this (None: leave it)
    cache_dir: str = "//parley_cache"  # "//" = next to the .blend

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BakeError(f"Unknown bake mode {self.mode!r}; use one of {', '.join(MODES)}")


@dataclass
class BakeResult:
    clip: str
    mode: str
    frames: int
    vertices: int
    start_frame: int
    seconds: float = 0.0
    modifier: str | None = None
    cache_file: str | None = None  # as stored in the modifier (relative when possible)
    shape_keys: list[str] = field(default_factory=list)
    action: str | None = None
    sound_strip: str | None = None
    warnings: list[str] = field(default_factory=list)  # the engine's, for the report (e.g. a transcript not used)

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.frames - 1


# --------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------
def clip_name(audio_path: str) -> str:
    """Clip label from an audio file name: letters, digits, '_', '-', '.' only."""
    stem = os.path.splitext(os.path.basename(audio_path))[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_") or "clip"


def mesh_faces_if_triangles(mesh: bpy.types.Mesh) -> np.ndarray | None:
    """(F,3) vertex indices when every polygon is a triangle (then the mesh can be
    fingerprinted exactly like the engine's topology), else None."""
    n = len(mesh.polygons)
    if n == 0:
        return None
    totals = np.empty(n, dtype=np.int32)
    mesh.polygons.foreach_get("loop_total", totals)
    if not np.all(totals == 3):
        return None
    verts = np.empty(n * 3, dtype=np.int32)
    mesh.polygons.foreach_get("vertices", verts)
    return verts.reshape(n, 3).astype(np.int64)


def object_topology(obj: bpy.types.Object) -> tuple[int, str | None]:
    """(vertex count, fingerprint or None when the mesh is not all triangles)."""
    mesh = obj.data
    assert isinstance(mesh, bpy.types.Mesh)
    v = len(mesh.vertices)
    faces = mesh_faces_if_triangles(mesh)
    return v, (formats.fingerprint(v, faces) if faces is not None else None)


def check_target(obj: bpy.types.Object | None) -> bpy.types.Object:
    if obj is None:
        raise BakeError("No target object: select the mesh to animate.")
    if obj.type != "MESH":
        raise BakeError(f"'{obj.name}' is a {obj.type.lower()}, not a mesh: select the face mesh to animate.")
    if obj.library is not None or (obj.data is not None and obj.data.library is not None):
        raise BakeError(f"'{obj.name}' is linked from a library and cannot be edited: make it local first.")
    return obj


def check_topology(obj: bpy.types.Object, info: formats.CheckpointInfo) -> None:
    """Refuse a mesh whose vertex count (or, for triangle meshes, face fingerprint) differs
    from the checkpoint's topology. Runs before any engine work."""
    v, fp = object_topology(obj)
    ckpt = os.path.basename(info.path)
    expected = f"{info.num_vertices if info.num_vertices is not None else '?'} vertices"
    if info.fingerprint:
        expected += f", topology {info.fingerprint}"
    actual = f"{v} vertices" + (f", topology {fp}" if fp else "")
    if info.num_vertices is not None and v != info.num_vertices:
        raise TopologyError(
            f"Topology mismatch: '{obj.name}' has {actual}, but the checkpoint {ckpt} "
            f"({info.topology_name or 'its head'}) expects {expected}. {_what_works(info)}")
    if fp and info.fingerprint and fp != info.fingerprint:
        raise TopologyError(
            f"Topology mismatch: '{obj.name}' has {actual}, but the checkpoint {ckpt} expects "
            f"{expected}: same vertex count, different faces (vertex order changed?). {_what_works(info)}")


#: topology of the head shipped with the add-on (Add > Mesh > Parley Head)
BUNDLED_HEAD_TOPOLOGY = "synthtalk_head"


def _what_works(info: formats.CheckpointInfo) -> str:
    if info.topology_name == BUNDLED_HEAD_TOPOLOGY:
        return ("Add > Mesh > Parley Head adds a mesh this model animates; for your own mesh use a "
                "checkpoint trained on it.")
    return f"Use a mesh with the checkpoint's topology ({info.topology_name or 'see Checkpoint info'}), " \
           "or a checkpoint trained on this mesh."


def unique_clip_label(obj: bpy.types.Object, clip: str) -> str:
    """``clip``, or ``clip.2``, ``clip.3``… so several bakes of one clip can coexist."""
    mesh = obj.data
    assert isinstance(mesh, bpy.types.Mesh)
    keys = mesh.shape_keys

    def taken(label: str) -> bool:
        if obj.modifiers.get(MODIFIER_PREFIX + label) is not None:
            return True
        if bpy.data.actions.get(MODIFIER_PREFIX + label) is not None:
            return True
        return keys is not None and keys.key_blocks.get(f"{label}_00000") is not None

    label, n = clip, 1
    while taken(label):
        n += 1
        label = f"{clip}.{n}"
    return label


# --------------------------------------------------------------------------------------
# animation helpers (4.5 / 5.0)
# --------------------------------------------------------------------------------------
def ensure_fcurve(id_data: Any, action: bpy.types.Action, data_path: str, index: int = 0) -> bpy.types.FCurve:
    """F-curve ``data_path`` on ``action`` (assigned to ``id_data``), slotted-action aware."""
    ad = id_data.animation_data or id_data.animation_data_create()
    if ad.action != action:
        ad.action = action
    if hasattr(action, "fcurve_ensure_for_datablock"):  # 4.4+: layers, strips, slots
        fc: bpy.types.FCurve = action.fcurve_ensure_for_datablock(id_data, data_path, index=index)
        return fc
    return action.fcurves.new(data_path, index=index)  # legacy actions (4.2, 4.3)


def set_keyframes(fc: bpy.types.FCurve, frames: np.ndarray, values: np.ndarray) -> None:
    """Replace nothing, add all points at once (``foreach_set``), CONSTANT interpolation."""
    n = len(frames)
    kp = fc.keyframe_points
    start = len(kp)
    kp.add(n)
    co = np.empty(2 * len(kp), dtype=np.float32)
    kp.foreach_get("co", co)
    co = co.reshape(-1, 2)
    co[start:, 0] = frames
    co[start:, 1] = values
    kp.foreach_set("co", co.ravel())
    for p in kp:  # enum: no foreach; a few ms for thousands of points
        p.interpolation = "CONSTANT"
    fc.update()


def _strip_collection(se: bpy.types.SequenceEditor) -> Any:
    return se.strips if hasattr(se, "strips") else se.sequences  # 4.4+: strips


def _all_strips(se: bpy.types.SequenceEditor) -> Any:
    return se.strips_all if hasattr(se, "strips_all") else se.sequences_all


# --------------------------------------------------------------------------------------
# the bake
# --------------------------------------------------------------------------------------
def bake(scene: bpy.types.Scene, obj: bpy.types.Object, pc2_path: str, opts: BakeOptions,
         frames: np.ndarray | None = None) -> BakeResult:
    """Bake ``pc2_path`` (the engine's output, in object local space) onto ``obj``.

    In CACHE mode the file is moved into the cache folder (so it must not be used afterwards
    by the caller); in SHAPEKEYS mode it is only read. All-or-nothing: on any error every
    change made so far is undone and the exception propagates.
    """
    t0 = time.perf_counter()
    check_target(obj)
    mesh = obj.data
    assert isinstance(mesh, bpy.types.Mesh)
    v_obj = len(mesh.vertices)
    v_file, t_file, _, _ = formats.read_pc2_header(pc2_path)
    if v_file != v_obj:
        raise TopologyError(f"The animation has {v_file} vertices but '{obj.name}' has {v_obj}; nothing was changed.")
    if t_file < 1:
        raise BakeError(f"{pc2_path} holds no frames; nothing was changed.")
    label = unique_clip_label(obj, opts.clip)
    result = BakeResult(clip=label, mode=opts.mode, frames=t_file, vertices=v_obj, start_frame=opts.start_frame)
    rb = Rollback()
    try:
        if opts.mode == "CACHE":
            _bake_cache(scene, obj, pc2_path, label, opts, rb, result)
        else:
            data = formats.read_pc2(pc2_path, mmap=True) if frames is None else frames
            try:
                _bake_shape_keys(obj, data, label, opts, rb, result)
            finally:
                del data  # release the mapping: the caller deletes the file next
        if opts.audio_path:
            _add_sound_strip(scene, opts.audio_path, label, opts.start_frame, rb, result)
        if opts.set_frame_range:
            _set_frame_range(scene, opts.start_frame, result.end_frame, rb)
        if opts.set_fps:
            _set_fps(scene, opts.set_fps, rb)
    except BaseException as exc:
        failures = rb.run()
        if failures and isinstance(exc, Exception):
            raise BakeError(f"{exc} (and rollback had problems: {'; '.join(failures)})") from exc
        raise
    rb.forget()
    mesh.update()
    result.seconds = time.perf_counter() - t0
    return result


def resolve_cache_dir(cache_dir: str) -> str:
    """Absolute folder for mesh caches; '//' needs a saved .blend."""
    if cache_dir.startswith("//") and not bpy.data.filepath:
        raise BakeError("Save the .blend first: mesh caches are written next to it "
                        "(or set an absolute cache folder in the Parley preferences).")
    return os.path.abspath(bpy.path.abspath(cache_dir))


def _rmdir_if_empty(d: str) -> Callable[[], None]:
    def undo() -> None:
        if os.path.isdir(d) and not os.listdir(d):
            os.rmdir(d)

    return undo


def _unique_file(folder: str, stem: str, ext: str) -> str:
    path = os.path.join(folder, stem + ext)
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(folder, f"{stem}_{n}{ext}")
    return path


def _bake_cache(scene: bpy.types.Scene, obj: bpy.types.Object, pc2_path: str, label: str,
                opts: BakeOptions, rb: Rollback, result: BakeResult) -> None:
    folder = resolve_cache_dir(opts.cache_dir)
    if not os.path.isdir(folder):
        # create missing parents, remembering which ones so a rollback removes only those
        missing = []
        p = folder
        while not os.path.isdir(p):
            missing.append(p)
            p = os.path.dirname(p)
        os.makedirs(folder)
        for d in missing:  # deepest first
            rb.add(f"remove folder {d}", _rmdir_if_empty(d))
    dest = _unique_file(folder, label, ".pc2")
    try:
        os.replace(pc2_path, dest)
        rb.add(f"move {dest} back", lambda: os.replace(dest, pc2_path))
    except OSError:  # another file system: copy, then the caller's temp file stays
        shutil.copyfile(pc2_path, dest)
        rb.add(f"delete {dest}", lambda: os.unlink(dest))
    stored = dest
    if bpy.data.filepath:
        try:
            stored = bpy.path.relpath(dest)
        except ValueError:  # different drive on Windows
            stored = dest
    mod = obj.modifiers.new(name=MODIFIER_PREFIX + label, type="MESH_CACHE")
    name = mod.name
    rb.add(f"remove modifier {name}", lambda: obj.modifiers.remove(obj.modifiers[name]))
    assert isinstance(mod, bpy.types.MeshCacheModifier)
    mod.cache_format = "PC2"
    mod.filepath = stored
    mod.time_mode = "FRAME"
    mod.play_mode = "SCENE"
    mod.frame_start = float(opts.start_frame)
    mod.frame_scale = 1.0
    mod.deform_mode = "OVERWRITE"
    mod.interpolation = "LINEAR"
    mod.forward_axis = "POS_Y"  # the engine writes object local coordinates: no axis change
    mod.up_axis = "POS_Z"
    # Before any other kind of modifier (the cache replaces the base mesh; subsurf etc. still
    # apply on top) but after earlier Parley caches, so the newest clip wins where they overlap.
    idx = len(obj.modifiers) - 1
    target = 0
    while target < idx and obj.modifiers[target].type == "MESH_CACHE":
        target += 1
    if target < idx and hasattr(obj.modifiers, "move"):
        obj.modifiers.move(idx, target)
    result.modifier = name
    result.cache_file = stored


def _bake_shape_keys(obj: bpy.types.Object, frames: np.ndarray, label: str, opts: BakeOptions,
                     rb: Rollback, result: BakeResult) -> None:
    mesh = obj.data
    assert isinstance(mesh, bpy.types.Mesh)
    t_count = frames.shape[0]
    key = mesh.shape_keys
    if key is not None and not opts.relative_keys and key.use_relative and len(key.key_blocks) > 1:
        raise BakeError(
            f"'{obj.name}' already has relative shape keys ({len(key.key_blocks) - 1} besides the basis); "
            "absolute Parley keys would change how they play. Use the 'Relative keys' option or the "
            "Mesh cache mode.")
    if key is not None and opts.relative_keys and not key.use_relative:
        raise BakeError(f"'{obj.name}' has absolute shape keys (an earlier Parley bake?); relative keys "
                        "cannot be added to them. Use absolute keys or the Mesh cache mode.")
    old_active = obj.active_shape_key_index
    old_lock = obj.show_only_shape_key
    rb.add("restore active shape key", lambda: setattr(obj, "active_shape_key_index", old_active))
    if key is None:
        obj.shape_key_add(name="Basis", from_mix=False)
        rb.add("remove shape keys", lambda: obj.shape_key_clear())
        key = mesh.shape_keys
        assert key is not None
    key_name = key.name
    names: list[str] = []

    def remove_keys() -> None:
        k = bpy.data.shape_keys.get(key_name)
        if k is None:
            return
        for n in reversed(names):
            kb = k.key_blocks.get(n)
            if kb is not None:
                obj.shape_key_remove(kb)

    rb.add("remove Parley shape keys", remove_keys)
    for t in range(t_count):
        kb = obj.shape_key_add(name=f"{label}_{t:05d}", from_mix=False)
        names.append(kb.name)
        kb.interpolation = "KEY_LINEAR"  # absolute keys: exact shape at each key's position
        # ShapeKey.points (4.1+) has a raw foreach path; .data goes item by item (~200x slower)
        (kb.points if hasattr(kb, "points") else kb.data).foreach_set(
            "co", np.ascontiguousarray(frames[t], dtype=np.float32).reshape(-1))
        if opts.relative_keys:
            kb.relative_key = key.reference_key
    obj.show_only_shape_key = old_lock

    ad_created = key.animation_data is None
    ad = key.animation_data or key.animation_data_create()
    old_action = ad.action
    old_slot = getattr(ad, "action_slot", None)

    def restore_anim() -> None:
        k = bpy.data.shape_keys.get(key_name)
        if k is None:
            return
        if ad_created:
            k.animation_data_clear()
            return
        adata = k.animation_data
        if adata is None:
            return
        adata.action = old_action
        if old_slot is not None and hasattr(adata, "action_slot"):
            try:
                adata.action_slot = old_slot
            except (TypeError, RuntimeError, AttributeError):
                pass

    rb.add("restore shape-key animation", restore_anim)
    action = bpy.data.actions.new(MODIFIER_PREFIX + label)
    action_name = action.name
    rb.add(f"remove action {action_name}", lambda: _remove_action(action_name))
    if old_action is not None and not old_action.use_fake_user and old_action.users <= 1:
        # the previous clip's action would be orphaned (and lost on save) once replaced
        old_action.use_fake_user = True
        rb.add("restore fake user", lambda: setattr(old_action, "use_fake_user", False))
    start = float(opts.start_frame)
    scene_frames = start + np.arange(t_count, dtype=np.float64)
    if opts.relative_keys:
        for t, n in enumerate(names):
            fc = ensure_fcurve(key, action, f'key_blocks["{n}"].value')
            f = scene_frames[t]
            set_keyframes(fc, np.array([f - 1, f, f + 1]), np.array([0.0, 1.0, 0.0]))
    else:
        old_rel, old_eval = key.use_relative, key.eval_time
        def restore_key() -> None:
            key.use_relative = old_rel
            key.eval_time = old_eval

        rb.add("restore key settings", restore_key)
        key.use_relative = False
        # positions of the new keys (the last t_count blocks); read in one call: name lookups
        # in a collection of thousands of keys are linear searches
        all_pos = np.empty(len(key.key_blocks), dtype=np.float32)
        key.key_blocks.foreach_get("frame", all_pos)
        positions = all_pos[-t_count:].astype(np.float64)
        if key.key_blocks[len(key.key_blocks) - 1].name != names[-1]:
            raise BakeError("internal error: new shape keys are not the last ones")
        fc = ensure_fcurve(key, action, "eval_time")
        set_keyframes(fc, scene_frames, positions)
    result.shape_keys = names
    result.action = action_name


def _remove_action(name: str) -> None:
    act = bpy.data.actions.get(name)
    if act is not None:
        bpy.data.actions.remove(act)


def _free_channel(se: bpy.types.SequenceEditor, start: int, end: int) -> int:
    busy = set()
    for s in _all_strips(se):
        if s.frame_final_start <= end and s.frame_final_end > start:
            busy.add(s.channel)
    ch = 1
    while ch in busy:
        ch += 1
    return min(ch, 128)


def _add_sound_strip(scene: bpy.types.Scene, audio_path: str, label: str, start: int,
                     rb: Rollback, result: BakeResult) -> None:
    audio_abs = os.path.abspath(bpy.path.abspath(audio_path))
    if not os.path.isfile(audio_abs):
        raise BakeError(f"Audio file not found: {audio_abs}")
    se_created = scene.sequence_editor is None
    se = scene.sequence_editor or scene.sequence_editor_create()
    if se_created:
        rb.add("remove sequence editor", lambda: scene.sequence_editor_clear())
    sounds_before = {s.name for s in bpy.data.sounds}
    channel = _free_channel(se, start, start + result.frames)
    strip = _strip_collection(se).new_sound(name=label, filepath=audio_abs, channel=channel, frame_start=start)
    strip_name = strip.name

    def remove_strip() -> None:
        ed = scene.sequence_editor
        if ed is not None:
            s = _all_strips(ed).get(strip_name)
            if s is not None:
                _strip_collection(ed).remove(s)
        for snd in list(bpy.data.sounds):
            if snd.name not in sounds_before and snd.users == 0:
                bpy.data.sounds.remove(snd)

    rb.add(f"remove sound strip {strip_name}", remove_strip)
    if bpy.data.filepath:
        try:
            rel = bpy.path.relpath(audio_abs)
            if hasattr(strip, "sound") and strip.sound is not None:
                strip.sound.filepath = rel
        except ValueError:
            pass
    result.sound_strip = strip_name


def _set_frame_range(scene: bpy.types.Scene, start: int, end: int, rb: Rollback) -> None:
    old = (scene.frame_start, scene.frame_end)

    def restore() -> None:
        scene.frame_start, scene.frame_end = old

    rb.add("restore frame range", restore)
    if end < scene.frame_start:  # keep frame_end >= frame_start while assigning
        scene.frame_start = start
        scene.frame_end = end
    else:
        scene.frame_end = end
        scene.frame_start = start


def _set_fps(scene: bpy.types.Scene, fps: float, rb: Rollback) -> None:
    r = scene.render
    old = (r.fps, r.fps_base)

    def restore() -> None:
        r.fps, r.fps_base = old

    rb.add("restore fps", restore)
    whole = max(1, int(round(fps)))
    r.fps = whole
    r.fps_base = whole / float(fps)


def scene_fps(scene: bpy.types.Scene) -> float:
    return float(scene.render.fps) / float(scene.render.fps_base)


# --------------------------------------------------------------------------------------
# reading animation back (style references, tests, benchmarks)
# --------------------------------------------------------------------------------------
def evaluated_vertices(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph | None = None) -> np.ndarray:
    """(V,3) evaluated (modifiers + shape keys) local vertex positions at the current frame."""
    dg = depsgraph or bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    me = ev.to_mesh()
    try:
        co = np.empty(len(me.vertices) * 3, dtype=np.float32)
        me.vertices.foreach_get("co", co)
    finally:
        ev.to_mesh_clear()
    return co.reshape(-1, 3)


def sample_animation(scene: bpy.types.Scene, obj: bpy.types.Object, first: int, last: int) -> np.ndarray:
    """(T,V,3) evaluated positions for frames first..last; the current frame is restored."""
    old = (scene.frame_current, scene.frame_subframe)
    out = []
    try:
        for f in range(first, last + 1):
            scene.frame_set(f)
            out.append(evaluated_vertices(obj, bpy.context.evaluated_depsgraph_get()))
    finally:
        scene.frame_set(old[0], subframe=old[1])
    return np.stack(out)


def animation_range(obj: bpy.types.Object) -> tuple[int, int] | None:
    """Frame range of an object's Parley-style animation: its first mesh cache modifier or
    its shape-key action; None when it has neither."""
    for mod in obj.modifiers:
        if mod.type == "MESH_CACHE":
            assert isinstance(mod, bpy.types.MeshCacheModifier)
            path = bpy.path.abspath(mod.filepath)
            if os.path.isfile(path) and mod.cache_format == "PC2":
                _, t, _, _ = formats.read_pc2_header(path)
                s = int(mod.frame_start)
                return s, s + t - 1
    mesh = obj.data
    key = mesh.shape_keys if isinstance(mesh, bpy.types.Mesh) else None
    if key is not None and key.animation_data is not None and key.animation_data.action is not None:
        rng = key.animation_data.action.frame_range
        return int(rng[0]), int(rng[1])
    return None

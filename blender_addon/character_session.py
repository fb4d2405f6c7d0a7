"""Runs for "any character": the Fit button and Generate onto a mesh of another topology.

Both follow :mod:`session`'s contract (``start`` -> ``poll`` ... -> ``finish`` | ``cancel``; nothing
in the scene changes before ``finish`` succeeds), so the modal operator, Esc, the status bar and
the tests are the ones Generate already uses:

* :class:`FitSession` -- ``python -m engine fit --mesh <rest mesh> [--landmarks] [--vertex-group-file]``;
  ``finish`` stores the fit on the object (see :mod:`character`). A refused fit raises with the
  engine's message (advice said in panel terms) and stores nothing.
* :class:`CharacterSession` -- ``animate --target <rest mesh> --fit <stored fit>`` (vertices:
  baked as mesh cache or shape keys exactly as today) or ``animate --shapes shapes.npz``
  (the character's own keys: weight curves on an NLA track, :mod:`character_bake`). Without a
  fit, shape keys with ARKit/VRM/Rhubarb names are driven by name; the report says which path.

:func:`new_session` picks the class for a request; :func:`wrap_request` turns the panel's
request into a :class:`CharacterRequest` when the target needs retargeting.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, fields
from typing import Any

import bpy

from . import bake, character, engine_process, formats
from . import character_files as cf
from .character_bake import WeightBakeOptions, bake_weights
from .session import (EngineSession, GenerateError, GenerateRequest, GenerateSession, default_checkpoint,
                      explain_failure)

UP = {"AUTO": "auto", "Z": "z", "Y": "y"}


# ------------------------------------------------------------------------------ panel logic
def retargets(scene: bpy.types.Scene, obj: bpy.types.Object | None, info: Any) -> bool:
    """True when Generate goes through the retarget path: the shape-key target, or the vertex
    target on a mesh the checkpoint does not animate directly (another topology)."""
    if obj is None or obj.type != "MESH" or not hasattr(scene, "parley_character"):
        return False
    if character.settings(scene).target == "SHAPEKEYS":
        return True
    if not isinstance(info, formats.CheckpointInfo):
        return False
    try:
        bake.check_topology(obj, info)
    except bake.TopologyError:
        return True
    return False


def shape_target(scene: bpy.types.Scene) -> bool:
    return hasattr(scene, "parley_character") and character.settings(scene).target == "SHAPEKEYS"


def problems(scene: bpy.types.Scene, obj: bpy.types.Object | None, info: Any) -> list[str]:
    """What stops Generate on a character (empty when the target needs no retargeting)."""
    if not retargets(scene, obj, info):
        return []
    assert obj is not None
    tfp = info.fingerprint if isinstance(info, formats.CheckpointInfo) else None
    st = character.fit_state(obj, tfp)
    if character.settings(scene).target == "SHAPEKEYS":
        key = character.mesh_of(obj).shape_keys
        if key is None or len(key.key_blocks) < 2:
            return [f"'{obj.name}' has no shape keys: add some, or choose Target: This mesh's vertices"]
        if st.status == "stale":
            return [st.message]
        return []  # no fit: the engine drives ARKit/VRM/Rhubarb names, or says to fit
    if st.status != "valid":
        return [_unfitted_message(obj, info) if st.status == "none" else st.message]
    return []


def _unfitted_message(obj: bpy.types.Object, info: Any) -> str:
    """Why an unfitted mesh of another topology cannot be generated yet, and the two ways out:
    the topology mismatch itself (counts, which mesh works) plus the Fit button."""
    why = ""
    if isinstance(info, formats.CheckpointInfo):
        try:
            bake.check_topology(obj, info)
        except bake.TopologyError as exc:
            why = str(exc).rstrip() + " "
    return f"{why}To animate '{obj.name}' as your own character, fit it first (Fit button)"


# ------------------------------------------------------------------------------ requests
@dataclass
class CharacterRequest(GenerateRequest):
    target: str = "VERTICES"  # VERTICES | SHAPEKEYS
    sparse: bool = True
    tolerance: float = 0.02


def wrap_request(context: bpy.types.Context, req: GenerateRequest) -> GenerateRequest:
    scene = context.scene
    obj = context.active_object
    info = formats.read_checkpoint_info(req.checkpoint) if req.checkpoint else None
    if scene is None or not retargets(scene, obj, info):
        return req
    s = character.settings(scene)
    base = {f.name: getattr(req, f.name) for f in fields(GenerateRequest)}
    base["use_object_template"] = False  # --template is for the model's own topology
    return CharacterRequest(**base, target=s.target, sparse=s.curves == "SPARSE", tolerance=float(s.tolerance))


def new_session(scene: bpy.types.Scene, req: GenerateRequest) -> GenerateSession:
    if isinstance(req, CharacterRequest):
        return CharacterSession(scene, req)
    return GenerateSession(scene, req)


def _engine_args(python: str, entry: Any, command: str, *args: str) -> list[str]:
    return [python, *entry, command, *args]


# ------------------------------------------------------------------------------ Generate
class CharacterSession(GenerateSession):
    req: CharacterRequest

    def prepare(self) -> list[str]:
        r = self.req
        obj = self.target()
        if obj.mode == "EDIT":
            obj.update_from_editmode()
        audio = os.path.abspath(bpy.path.abspath(r.audio_path))
        if not os.path.isfile(audio):
            raise GenerateError(f"Audio file not found: {audio}")
        r.audio_path = audio
        ckpt = r.checkpoint or default_checkpoint(r.engine_root)
        if ckpt is None:
            raise GenerateError("No checkpoint: the bundled default model is missing; choose a .safetensors file.")
        ckpt = os.path.abspath(bpy.path.abspath(ckpt))
        try:
            self.info = formats.read_checkpoint_info(ckpt)
        except formats.FormatError as exc:
            raise GenerateError(str(exc)) from exc
        st = character.fit_state(obj, self.info.fingerprint)
        if r.target == "VERTICES":
            if st.status != "valid":
                raise GenerateError(st.message)
            if r.mode == "CACHE":
                bake.resolve_cache_dir(r.cache_dir)
            elif not r.relative_keys:
                key = character.mesh_of(obj).shape_keys
                if key is not None and key.use_relative and len(key.key_blocks) > 1:
                    raise GenerateError(f"'{obj.name}' already has relative shape keys; use the 'Relative keys' "
                                        "option or the Mesh cache mode.")
        elif st.status == "stale":
            raise GenerateError(st.message)
        self.fps = float(r.fps) if r.fps else bake.scene_fps(self.scene)
        self.tmpdir = tempfile.mkdtemp(prefix="parley_")
        args: list[str] = []
        try:
            if r.target == "SHAPEKEYS":
                shapes = os.path.join(self.tmpdir, "shapes.npz")
                character.export_shapes(obj, shapes)
                self.out_path = os.path.join(self.tmpdir, f"{self.clip}.weights.json")
                args += ["--shapes", shapes]
            else:
                self.out_path = os.path.join(self.tmpdir, f"{self.clip}.pc2")
            if st.status == "valid":
                mesh = os.path.join(self.tmpdir, "character.npz")
                fit = os.path.join(self.tmpdir, "character.fit.npz")
                character.export_mesh(obj, mesh)
                character.write_fit(obj, fit)
                args += ["--target", mesh, "--fit", fit]
        except (cf.FormatError, OSError) as exc:
            self.cleanup()
            raise GenerateError(str(exc)) from exc
        python = r.python or engine_process.default_python()
        self.req.python = python
        transcript = engine_process.transcript_beside(audio, r.postprocess) if r.use_transcript else None
        ereq = engine_process.AnimateRequest(audio=audio, out=self.out_path, checkpoint=ckpt, fps=self.fps,
                                             device=r.device, postprocess=r.postprocess, transcript=transcript)
        return engine_process.build_animate_command(python, ereq, entry=r.engine_entry) + args

    def finish(self) -> bake.BakeResult:
        assert self.job is not None, "start() first"
        st = self.job.state
        try:
            if not st.ok:
                raise GenerateError(cf.explain_fit_message(explain_failure(st.message, self.req.python)))
            if self.req.target == "VERTICES":
                return self._bake_vertices(st)
            w = cf.read_weights_json(str(st.result.get("out") or self.out_path))
            r = self.req
            opts = WeightBakeOptions(clip=self.clip, start_frame=r.start_frame, sparse=r.sparse, tolerance=r.tolerance,
                                     audio_path=r.audio_path if r.add_sound_strip else None,
                                     set_frame_range=r.set_frame_range, set_fps=self.fps if r.set_scene_fps else None)
            self.result = bake_weights(self.scene, self.target(), w, opts)
            self.result.warnings = list(st.warnings)
            n_keys = getattr(self.result, "keyframes", 0)
            how = "solved through the fit" if w.path == "fit" else "mapped by key names (no fit)"
            self.result.note = (f" on an NLA track: {len(w.names)} shape keys {how}, {n_keys} keyframes"  # type: ignore[attr-defined]
                                + (f"; left alone: {', '.join(w.left_alone[:6])}" if w.left_alone else ""))
            return self.result
        finally:
            self.cleanup()

    def _bake_vertices(self, st: engine_process.JobState) -> bake.BakeResult:
        out = str(st.result.get("out") or self.out_path)
        r = self.req
        opts = bake.BakeOptions(
            clip=self.clip, mode=r.mode, start_frame=r.start_frame, relative_keys=r.relative_keys,
            audio_path=r.audio_path if r.add_sound_strip else None, set_frame_range=r.set_frame_range,
            set_fps=self.fps if r.set_scene_fps else None, cache_dir=r.cache_dir)
        self.result = bake.bake(self.scene, self.target(), out, opts)
        self.result.warnings = list(st.warnings)
        self.result.note = " (carried onto this mesh through its fit)"  # type: ignore[attr-defined]
        return self.result


# ------------------------------------------------------------------------------ Fit
@dataclass
class FitRequest:
    object_name: str
    checkpoint: str | None = None
    python: str = ""
    engine_root: str | None = None
    extra_paths: Any = ()
    engine_entry: Any = ("-m", "engine")
    up: str = "AUTO"
    head_group: str = ""


@dataclass
class FitResult:
    object_name: str
    residual: float
    landmark_source: str
    seconds: float


class FitSession(EngineSession):
    """``python -m engine fit`` on the object's rest mesh; the fit is stored on the object."""

    def __init__(self, scene: bpy.types.Scene, request: FitRequest):
        super().__init__(scene, request)
        self.mesh_fp = ""

    def prepare(self) -> list[str]:
        r = self.req
        obj = self.target()
        if obj.mode == "EDIT":
            obj.update_from_editmode()
        ckpt = r.checkpoint or default_checkpoint(r.engine_root)
        if ckpt is None:
            raise GenerateError("No checkpoint: the bundled default model is missing; choose a .safetensors file.")
        ckpt = os.path.abspath(bpy.path.abspath(ckpt))
        self.tmpdir = tempfile.mkdtemp(prefix="parley_")
        try:
            mesh = os.path.join(self.tmpdir, "character.npz")
            character.export_mesh(obj, mesh)
            self.mesh_fp = character.fingerprint(obj)
            self.out_path = os.path.join(self.tmpdir, "character.fit.npz")
            python = r.python or engine_process.default_python()
            self.req.python = python
            cmd = _engine_args(python, r.engine_entry, "fit", "--mesh", mesh, "--out", self.out_path,
                               "--checkpoint", ckpt, "--up", UP.get(r.up, "auto"), "--progress", "json")
            lms = character.assigned_landmarks(obj)
            if lms:
                path = os.path.join(self.tmpdir, "landmarks.json")
                cf.write_landmarks_json(path, lms, len(character.mesh_of(obj).vertices))
                cmd += ["--landmarks", path]
            if r.head_group:
                path = os.path.join(self.tmpdir, "head_group.json")
                with open(path, "w") as fh:
                    json.dump({"indices": character.head_group_indices(obj, r.head_group)}, fh)
                cmd += ["--vertex-group-file", path]
        except (cf.FormatError, OSError) as exc:
            self.cleanup()
            raise GenerateError(str(exc)) from exc
        return cmd

    def finish(self) -> FitResult:
        assert self.job is not None, "start() first"
        st = self.job.state
        try:
            if not st.ok:
                raise GenerateError("Fit refused: " + cf.explain_fit_message(explain_failure(st.message, self.req.python)))
            obj = self.target()
            if character.fingerprint(obj) != self.mesh_fp:
                raise GenerateError(f"'{obj.name}' was edited while it was being fitted: click Fit again")
            assert self.out_path is not None
            with open(self.out_path, "rb") as fh:
                data = fh.read()
            summary = character.store_fit(obj, data, self.mesh_fp)
            return FitResult(obj.name, summary.residual, summary.landmark_source,
                             float(summary.meta.get("seconds", 0.0)))
        finally:
            self.cleanup()

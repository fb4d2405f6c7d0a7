"""One "Generate from Audio" run: validate → engine (warm process or child) → bake, or clean up.

The interactive (modal) operator, its ``execute`` path, the headless batch script and the
tests all drive this same class, so what the tests verify is what users run:

    s = GenerateSession(scene, request)
    s.prepare()          # checks (topology, files) — raises before anything is started
    s.start()            # a request to the warm engine (req.warm) or a fresh engine child; the scene is not touched
    while not s.poll().finished: ...     # a modal timer, or a sleep loop
    result = s.finish()  # bakes in one step (all-or-nothing) or raises with the engine's message
    s.cancel()           # at any time before finish: kills the engine, removes temp files

Until :meth:`finish` succeeds nothing in the scene or the cache folder has changed.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import bpy
import numpy as np

from . import bake, engine_process, formats, warm_engine


class GenerateError(RuntimeError):
    """Shown to the user as is."""


@dataclass
class GenerateRequest:
    """Everything one generation needs; built from the panel settings or batch arguments."""

    object_name: str
    audio_path: str
    checkpoint: str | None = None  # None: the bundled default
    python: str = ""  # interpreter that runs the engine ("" = this Python)
    engine_root: str | None = None  # folder holding the ``engine`` package
    extra_paths: Sequence[str] = ()  # extra PYTHONPATH entries (the add-on's deps folder)
    engine_entry: Sequence[str] = ("-m", "engine")
    warm: bool = False  # send the run to the warm engine (warm_engine.py) instead of a fresh process
    device: str = "auto"
    mode: str = "CACHE"
    start_frame: int = 1
    fps: float | None = None  # None: the scene's fps
    relative_keys: bool = False
    add_sound_strip: bool = True
    set_frame_range: bool = False
    set_scene_fps: bool = False
    use_object_template: bool = False  # send the object's rest shape as --template
    style_path: str | None = None
    postprocess: str | None = None  # engine --postprocess; None = its default (lipclose: lips meet on B/P/M)
    use_transcript: bool = True  # send line.txt beside line.wav as --transcript (it times the lip closures)
    cache_dir: str = "//parley_cache"
    clip: str | None = None  # default: from the audio file name
    temp_files: list[str] = field(default_factory=list)  # deleted when the session ends (style samples)


def default_checkpoint(engine_root: str | None) -> str | None:
    if engine_root is None:
        return None
    p = os.path.join(engine_root, "engine", "assets", "default.safetensors")
    return p if os.path.isfile(p) else None


# engine stages → (words for the status bar, share of the whole run) — the engine reports
# per-stage fractions; the bar shows one number for the whole run
STAGES: dict[str, tuple[str, float, float]] = {
    "start": ("starting the engine", 0.0, 0.1), "encode": ("listening to the audio", 0.1, 0.6),
    "decode": ("animating the face", 0.6, 0.9), "write": ("writing the animation", 0.9, 1.0),
    "done": ("baking", 1.0, 1.0),
}


def describe_progress(stage: str, fraction: float) -> tuple[str, float]:
    """(status text, overall fraction 0..1) for one engine progress state."""
    words, lo, hi = STAGES.get(stage, (stage, 0.1, 0.9))
    overall = lo + (hi - lo) * min(1.0, max(0.0, fraction))
    return f"{words}… {int(round(overall * 100))}%", overall


_MISSING = re.compile(r"No module named '?([A-Za-z0-9_.]+)'?")


def explain_failure(message: str, python: str) -> str:
    """Turn the commonest engine failures into advice (the interpreter by name only: a full
    path does not fit the panel)."""
    exe = os.path.basename(python) or python
    missing = _MISSING.search(message)
    if missing is not None:
        mod = missing.group(1).split(".")[0]
        if mod == "engine":
            return (f"The Parley engine package was not found by the engine's Python ({exe}). Reinstall the "
                    "add-on or set the interpreter of an environment where Parley is installed.")
        return (f"The engine's Python ({exe}) has no {mod!r} package. Use Preferences > Add-ons > Parley > "
                "Install Engine Dependencies, or set an interpreter that has the Parley engine installed.")
    return message


class EngineSession:
    """One engine child process for a request: the steps every Parley operator shares.

    Subclasses implement ``prepare`` (checks + the engine command; may create ``self.tmpdir``)
    and ``finish`` (use the engine's output once the job finished)."""

    def __init__(self, scene: bpy.types.Scene, request: Any):
        self.scene = scene
        self.req = request
        self.job: engine_process.EngineJob | warm_engine.WarmJob | None = None
        self.tmpdir: str | None = None
        self.out_path: str | None = None

    def target(self) -> bpy.types.Object:
        obj = bpy.data.objects.get(self.req.object_name)
        if obj is None:
            raise GenerateError(f"Object '{self.req.object_name}' not found.")
        return bake.check_target(obj)

    def prepare(self) -> list[str]:
        raise NotImplementedError

    def finish(self) -> Any:
        raise NotImplementedError

    def start(self) -> engine_process.EngineJob | warm_engine.WarmJob:
        """Run the prepared command: a request to the warm engine when ``req.warm``, else a
        fresh ``python -m engine …`` child (same arguments, same events, same files)."""
        cmd = self.prepare()
        env = engine_process.engine_env(self.req.engine_root, self.req.extra_paths)
        try:
            if getattr(self.req, "warm", False):
                n = 1 + len(self.req.engine_entry)  # [python, *entry] + the command's arguments
                self.job = warm_engine.submit(cmd[:n], cmd[n:], env)
            else:
                self.job = engine_process.EngineJob(cmd, env=env, cwd=self.tmpdir).start()
        except engine_process.EngineError:
            self.cleanup()
            raise
        return self.job

    def poll(self) -> engine_process.JobState:
        assert self.job is not None, "start() first"
        return self.job.poll()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
        self.cleanup()

    def cleanup(self) -> None:
        if self.tmpdir and os.path.isdir(self.tmpdir):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None
        temp_files = getattr(self.req, "temp_files", None)
        for path in temp_files or ():
            if os.path.isfile(path):
                os.unlink(path)
        if temp_files:
            temp_files.clear()

    def run(self, timeout: float | None = None,
            on_progress: Callable[[engine_process.JobState], Any] | None = None) -> Any:
        """Synchronous: start, wait, finish (headless batch and ``execute``)."""
        job = self.start()
        try:
            job.wait(timeout=timeout, on_progress=on_progress)
        except BaseException:
            self.cancel()
            raise
        return self.finish()


class GenerateSession(EngineSession):
    def __init__(self, scene: bpy.types.Scene, request: GenerateRequest):
        super().__init__(scene, request)
        self.info: formats.CheckpointInfo | None = None
        self.fps: float = 30.0
        self.result: bake.BakeResult | None = None
        self.clip = request.clip or bake.clip_name(request.audio_path)

    # -- steps ---------------------------------------------------------------------------
    def prepare(self) -> list[str]:
        """All checks that can fail before the engine runs; returns the engine command."""
        r = self.req
        obj = self.target()
        audio = os.path.abspath(bpy.path.abspath(r.audio_path))
        if not os.path.isfile(audio):
            raise GenerateError(f"Audio file not found: {audio}")
        self.req.audio_path = audio
        ckpt = r.checkpoint or default_checkpoint(r.engine_root)
        if ckpt is None:
            raise GenerateError("No checkpoint: the bundled default model is missing; choose a .safetensors file.")
        ckpt = os.path.abspath(bpy.path.abspath(ckpt))
        try:
            self.info = formats.read_checkpoint_info(ckpt)
        except formats.FormatError as exc:
            raise GenerateError(str(exc)) from exc
        bake.check_topology(obj, self.info)
        if r.mode == "CACHE":
            bake.resolve_cache_dir(r.cache_dir)  # refuses an unsaved .blend early
        if r.mode == "SHAPEKEYS" and not r.relative_keys:
            key = obj.data.shape_keys if isinstance(obj.data, bpy.types.Mesh) else None
            if key is not None and key.use_relative and len(key.key_blocks) > 1:
                raise GenerateError(f"'{obj.name}' already has relative shape keys; use the 'Relative keys' "
                                    "option or the Mesh cache mode.")
        style = None
        if r.style_path:
            style = os.path.abspath(bpy.path.abspath(r.style_path))
            if not os.path.isfile(style):
                raise GenerateError(f"Style reference not found: {style}")
        self.fps = float(r.fps) if r.fps else bake.scene_fps(self.scene)
        self.tmpdir = tempfile.mkdtemp(prefix="parley_")
        self.out_path = os.path.join(self.tmpdir, f"{self.clip}.pc2")
        template = None
        if r.use_object_template:
            template = os.path.join(self.tmpdir, "template.obj")
            mesh = obj.data
            assert isinstance(mesh, bpy.types.Mesh)
            co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
            mesh.vertices.foreach_get("co", co)
            faces = bake.mesh_faces_if_triangles(mesh)
            if faces is None:
                mesh.calc_loop_triangles()
                tri = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
                mesh.loop_triangles.foreach_get("vertices", tri)
                faces = tri.reshape(-1, 3)
            formats.write_template_obj(template, co.reshape(-1, 3), faces)
        ereq = engine_process.AnimateRequest(
            audio=audio, out=self.out_path, checkpoint=ckpt, template=template, style=style,
            fps=self.fps, device=r.device, postprocess=r.postprocess,
            transcript=engine_process.transcript_beside(audio, r.postprocess) if r.use_transcript else None)
        python = r.python or engine_process.default_python()
        self.req.python = python
        return engine_process.build_animate_command(python, ereq, entry=r.engine_entry)

    def finish(self) -> bake.BakeResult:
        """Bake the engine's output (call once the job finished)."""
        assert self.job is not None, "start() first"
        st = self.job.state
        try:
            if not st.ok:
                raise GenerateError(explain_failure(st.message, self.req.python))
            out = str(st.result.get("out") or self.out_path)
            obj = self.target()  # it may have been deleted while the engine ran
            r = self.req
            opts = bake.BakeOptions(
                clip=self.clip, mode=r.mode, start_frame=r.start_frame, relative_keys=r.relative_keys,
                audio_path=r.audio_path if r.add_sound_strip else None,
                set_frame_range=r.set_frame_range, set_fps=self.fps if r.set_scene_fps else None,
                cache_dir=r.cache_dir)
            self.result = bake.bake(self.scene, obj, out, opts)
            self.result.warnings = list(st.warnings)
            return self.result
        finally:
            self.cleanup()

    def take_output(self, dest: str) -> str:
        """Move the finished engine output to ``dest`` (for a caller that bakes later, e.g. a
        dialogue run merging lines) and clean up; raises GenerateError if the engine failed."""
        assert self.job is not None, "start() first"
        st = self.job.state
        try:
            if not st.ok:
                raise GenerateError(explain_failure(st.message, self.req.python))
            shutil.move(str(st.result.get("out") or self.out_path), dest)
            return dest
        finally:
            self.cleanup()


@dataclass
class ProbeCache:
    """Result of ``import torch, engine`` per interpreter (probing costs a torch import)."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, python: str) -> dict[str, Any] | None:
        return self.results.get(python)

    def probe(self, python: str, engine_root: str | None, extra_paths: Sequence[str] = ()) -> dict[str, Any]:
        env = engine_process.engine_env(engine_root, extra_paths)
        info = engine_process.probe_interpreter(python, env)
        self.results[python] = info
        return info


PROBES = ProbeCache()

"""``python -m engine animate``: speech audio -> vertex animation file (the Blender add-on's entry point).

    python -m engine animate --audio A.wav [--checkpoint C] [--template mesh.obj] [--style ref.npy|ref.pc2]
        [--fps F] [--device auto|cpu|cuda] [--postprocess lipclose|none] [--transcript line.txt]
        --out out.{npy,pc2,mdd} | --out-dir objs/ [--progress json]

``--postprocess lipclose`` (the default) closes the lips on /p b m/ heard in the audio
(:mod:`engine.postprocess`, one extra phoneme-recogniser pass); ``none`` writes the model's output
as is (what the benchmark's model rows score).  With ``--transcript`` (the words spoken, a text
file) the closures come from the transcript's /p b m/ timed by forced alignment instead; a
transcript that cannot be aligned (a word outside the dictionary, text that does not match the
audio) gives a warning and the recogniser's evidence, never a failed line.

Output files are written *while* decoding: the destination format's header goes into a temporary
file next to the destination, each decoded window of frames is appended to it, and the file is
renamed into place only when complete.  So an hour of audio never needs the whole animation in
RAM, and a crash never leaves a half-written cache that Blender would happily load.

``--progress json`` prints one JSON object per line on stdout (the add-on's protocol)::

    {"event": "progress", "stage": "encode|decode|write", "fraction": 0.42}
    {"event": "done", "out": "...", "frames": T, "vertices": V, "fps": 30.0}

errors are reported by :func:`engine.cli.main` as ``{"event": "error", "message": ...}`` (exit 2).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from engine.postprocess import DEFAULT_POSTPROCESS

__all__ = ["register", "run_animate", "open_output", "resolve_postprocess", "read_transcript", "align_transcript"]

FORMATS = (".npy", ".pc2", ".mdd")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("animate", help="animate a face from speech audio",
                              description="Animate a face mesh from speech audio with a Parley checkpoint.")
    p.add_argument("--audio", required=True, help="speech audio file (wav/flac/ogg/...; any rate, resampled to 16 kHz)")
    p.add_argument("--checkpoint", default="default",
                   help="shipped checkpoint name (see `python -m engine info --list`) or a .safetensors file "
                        "(default: 'default')")
    p.add_argument("--template", help="neutral mesh (.obj/.ply/.npy) with the checkpoint's topology: "
                                      "animate this identity instead of the checkpoint's template")
    p.add_argument("--style", help="reference motion (.npy (T,V,3) / .pc2 / .mdd) on the same topology: "
                                   "its speaking style modulates the animation")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the checkpoint's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--postprocess", default=None, type=_postprocess, metavar="{lipclose,none}",
                   help="lipclose: close the lips on /p b m/ heard in the audio (one phoneme-recogniser pass, "
                        "~0.1-0.2 s per second of audio); none: the model's output as is "
                        f"(default: {DEFAULT_POSTPROCESS} where the checkpoint's topology has inner-lip masks)")
    p.add_argument("--transcript", metavar="TEXT_FILE",
                   help="the words spoken (UTF-8 text file): lipclose then closes the lips on the transcript's "
                        "/p b m/, timed by forced alignment (needs pocketsphinx), instead of the ones a phoneme "
                        "recogniser hears")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", help="output animation: .npy, .pc2 or .mdd")
    g.add_argument("--out-dir", help="write an OBJ sequence into this folder")
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar",
                   help="bar: tqdm on stderr; json: one JSON event per line on stdout (Blender add-on)")
    _add_retarget_options(p)
    p.set_defaults(func=run_animate)


def _postprocess(name: str) -> str:
    from engine.postprocess import check_postprocess

    try:
        return check_postprocess(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolve_postprocess(requested: str | None, topology: Any) -> str:
    """``--postprocess`` as given, else the default -- unless the topology cannot support it
    (no paired inner-lip masks, e.g. a user's own capture): then ``none`` with a warning."""
    if requested is not None:
        return requested
    masks = getattr(topology, "masks", {}) or {}
    if DEFAULT_POSTPROCESS == "lipclose" and not {"lip_upper_inner", "lip_lower_inner"} <= set(masks):
        print(f"warning: topology {getattr(topology, 'name', '')!r} has no lip_upper_inner/lip_lower_inner masks, "
              "so the lips are not closed on /p b m/ (postprocess none)", file=sys.stderr)
        return "none"
    return DEFAULT_POSTPROCESS


def read_transcript(path: str | None, postprocess: str) -> str | None:
    """``--transcript``'s text, checked before any work: a missing or empty file is an error, and
    so is a transcript without the stage that uses it."""
    if not path:
        return None
    if postprocess != "lipclose":
        raise ValueError("--transcript times the lip closures of --postprocess lipclose; "
                         f"it has no use with --postprocess {postprocess}")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"--transcript {path!r}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--transcript {path!r}: cannot read it as UTF-8 text ({exc})") from None
    if not text.strip():
        raise ValueError(f"--transcript {path!r} is empty: give the words spoken, or leave the option out")
    return text


def align_transcript(wav: np.ndarray, text: str | None, warn: Any) -> list | None:
    """The transcript's timed phones, or None (with ``warn(message)``) when it cannot be aligned:
    the line is still animated, with the recogniser's bilabials."""
    if text is None:
        return None
    from engine.align import AlignmentError, align

    try:
        return align(wav, text)[0]
    except AlignmentError as exc:
        warn(f"transcript not used ({exc}); lips closed from the audio alone")
        return None


def _add_retarget_options(p: argparse.ArgumentParser) -> None:
    """Any character (issue 10): ``--target`` mesh of any topology, ``--shapes`` for its own keys."""
    from engine.cli_fit import add_mesh_options

    g = p.add_argument_group("any character (retargeting)")
    g.add_argument("--target", help="your head mesh, any topology (.obj/.ply/.npz): the animation is carried onto it; "
                                    "--out then has its vertex count")
    g.add_argument("--fit", help="fit file from `python -m engine fit` (default: fit --target now)")
    g.add_argument("--shapes", help="shapes.npz (Basis + one (V,3) array per key): write per-frame key weights "
                                    "to --out *.json instead of vertices")
    g.add_argument("--retarget", choices=["auto", "fit", "names"], default="auto",
                   help="for --shapes: solve through the fit, or map by key names (ARKit/VRM/Rhubarb); "
                        "auto = fit, else names")
    add_mesh_options(g)


# ----------------------------------------------------------------------------- progress
class _Progress:
    """Emit progress as JSON lines (throttled to 1% steps) or as tqdm bars."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.last: dict[str, float] = {}
        self.bars: dict[str, Any] = {}

    def warn(self, message: str) -> None:
        if self.mode == "json":
            print(json.dumps({"event": "warning", "message": message}), flush=True)
        else:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def __call__(self, stage: str, fraction: float) -> None:
        fraction = float(min(1.0, max(0.0, fraction)))
        if self.mode == "json":
            if fraction < 1.0 and fraction - self.last.get(stage, -1.0) < 0.01:
                return
            self.last[stage] = fraction
            print(json.dumps({"event": "progress", "stage": stage, "fraction": round(fraction, 4)}), flush=True)
        elif self.mode == "bar":
            from tqdm import tqdm
            bar = self.bars.get(stage)
            if bar is None:
                bar = self.bars[stage] = tqdm(total=1000, desc=stage, file=sys.stderr, leave=True,
                                              bar_format="{desc:>7}: {percentage:3.0f}%|{bar}| {elapsed}")
            bar.n = int(fraction * 1000)
            bar.refresh()
            if fraction >= 1.0:
                bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


# ----------------------------------------------------------------------------- output files
@contextlib.contextmanager
def open_output(path: Path, num_frames: int, num_vertices: int, fps: float) -> Iterator["_StreamWriter"]:
    """A ``(T, V, 3)`` sink that streams frames (in order) into a temporary file next to ``path``,
    renamed into place when complete.  Nothing of output size is kept in memory (not even as
    dirty memory-mapped pages), so an hour of animation needs no more RAM than a minute."""
    from engine.exporters import MDD_HEADER, PC2_HEADER, PC2_MAGIC

    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"unsupported output {path.name!r}: use .npy, .pc2, .mdd, or --out-dir for OBJs")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    shape = (num_frames, num_vertices, 3)
    try:
        with open(tmp, "wb") as fh:
            if suffix == ".npy":
                np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
                dtype = "<f4"
            elif suffix == ".pc2":
                fh.write(PC2_HEADER.pack(PC2_MAGIC, 1, num_vertices, 0.0, 1.0, num_frames))
                dtype = "<f4"
            else:
                times = (np.arange(num_frames, dtype=np.float64) / float(fps)).astype(">f4")
                fh.write(MDD_HEADER.pack(num_frames, num_vertices) + times.tobytes())
                dtype = ">f4"
            sink = _StreamWriter(fh, shape, dtype)
            yield sink
            if sink.next != num_frames:
                raise RuntimeError(f"internal error: wrote {sink.next} of {num_frames} frames")
            fh.flush()
            with contextlib.suppress(OSError):
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class _StreamWriter:
    """Array-like sink for :func:`engine.inference.decode_windows`: ``out[a:b] = frames`` appends
    the frames to the file in its byte order; windows must arrive in order (they do)."""

    def __init__(self, fh: Any, shape: tuple[int, int, int], dtype: str) -> None:
        self.fh = fh
        self.shape = shape
        self.dtype = dtype
        self.next = 0

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        start = key.start or 0 if isinstance(key, slice) else None
        if start != self.next:
            raise RuntimeError(f"frames must be written in order: expected frame {self.next}, got {key!r}")
        arr = np.asarray(value, dtype=np.float32)
        if arr.shape[1:] != self.shape[1:]:
            raise ValueError(f"frames of shape {arr.shape[1:]} do not fit {self.shape[1:]}")
        self.fh.write(arr.astype(self.dtype, copy=False).tobytes())
        self.next += arr.shape[0]


def _read_style(path: str, num_vertices: int) -> np.ndarray:
    from engine.exporters import read_animation
    from engine.topology import TopologyMismatch

    try:
        frames, _ = read_animation(path)
    except ValueError as exc:
        raise ValueError(f"--style {path}: {exc}") from None
    if frames.shape[1] != num_vertices:
        raise TopologyMismatch(f"--style {path} has {frames.shape[1]} vertices but the model animates "
                               f"{num_vertices}; the reference motion must be on the model's topology")
    return frames


def _read_template(path: str, topology: Any) -> np.ndarray:
    from engine.topology import Topology

    p = Path(path)
    if p.suffix.lower() == ".npy":
        verts = np.load(p, allow_pickle=False).reshape(-1, 3)
        topology.check_compatible(len(verts), what=f"template {p.name}")
        return verts.astype(np.float32)
    mesh = Topology.load(p)
    topology.check_compatible(mesh.num_vertices, what=f"template {p.name}")
    if mesh.fingerprint() != topology.fingerprint():
        # Same vertex count but other triangles: often only a different triangulation of quads
        # (Blender export), sometimes a reordered mesh.  Warn rather than refuse.
        print(f"warning: template {p.name} has the model's vertex count but different faces "
              f"({mesh.fingerprint()} vs {topology.fingerprint()}); make sure the vertex order is the model's",
              file=sys.stderr)
    return np.asarray(mesh.vertices, dtype=np.float32)


def load_animator(args: argparse.Namespace) -> Any:
    """The model for this run: loaded now, or the warm server's (``python -m engine serve`` sets
    ``args.animators``, an :class:`engine.serve.AnimatorCache`)."""
    cache = getattr(args, "animators", None)
    if cache is not None:
        return cache.get(args.checkpoint, args.device)
    from engine.inference import Animator

    return Animator.from_checkpoint(args.checkpoint, device=args.device)


def run_animate(args: argparse.Namespace) -> int:
    from engine.audio import load_audio, num_frames

    if getattr(args, "target", None) or getattr(args, "shapes", None) or getattr(args, "fit", None):
        from engine.retarget.run import run_retarget_cli
        return run_retarget_cli(args)
    if args.out:
        out = Path(args.out)
        if out.suffix.lower() not in FORMATS:
            raise ValueError(f"--out {out.name!r}: use .npy, .pc2 or .mdd (or --out-dir for an OBJ sequence)")
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    progress = _Progress(args.progress)
    wav = load_audio(args.audio)
    anim = load_animator(args)
    args.postprocess = resolve_postprocess(args.postprocess, anim.topology)
    text = read_transcript(getattr(args, "transcript", None), args.postprocess)
    fps = float(args.fps or anim.fps)
    template = _read_template(args.template, anim.topology) if args.template else None
    style = _read_style(args.style, anim.num_vertices) if args.style else None
    T, V = num_frames(len(wav), fps), anim.num_vertices
    phones = align_transcript(wav, text, progress.warn)
    try:
        if args.out:
            with open_output(out, T, V, fps) as buf:
                anim.animate(wav, fps=fps, style=style, template=template, progress=progress, out=buf,
                             postprocess=args.postprocess, transcript=phones)
                progress("write", 1.0)
            dest = str(out)
        else:
            from engine.exporters import write_obj_sequence
            frames = anim.animate(wav, fps=fps, style=style, template=template, progress=progress,
                                  postprocess=args.postprocess, transcript=phones)
            write_obj_sequence(args.out_dir, frames, anim.topology.faces,
                               progress=lambda f: progress("write", f))
            dest = str(args.out_dir)
    finally:
        progress.close()
    if args.progress == "json":
        print(json.dumps({"event": "done", "out": dest, "frames": T, "vertices": V, "fps": fps}), flush=True)
    else:
        print(f"wrote {dest}: {T} frames x {V} vertices at {fps:g} fps", file=sys.stderr)
    return 0

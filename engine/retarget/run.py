"""The retarget flows behind the CLI (``python -m engine fit`` and ``animate --target/--shapes``),
as plain functions the Blender add-on's child process can also call.

* :func:`fit_or_load` -- a fit for a mesh: load ``--fit`` (checked against the mesh and the
  checkpoint's template) or fit now; ``up="auto"`` tries Z-up then Y-up and keeps the one where a
  face is found looking the expected way.
* :func:`animate_vertices` -- template frames -> the character's vertices, streamed to a file.
* :func:`animate_shapes` -- template frames -> weights of the character's own shape keys, by
  the fit (geometric solve) or, for rigs without a usable fit, by key names; the result says
  which path was used.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.retarget.fit import Fit, FitError, fit_mesh, load_fit
from engine.retarget.landmarks import LandmarkError, find_face
from engine.retarget.meshin import (
    MeshInputError,
    UserMesh,
    axes_rotation,
    find_head,
    load_user_mesh,
)

__all__ = ["animate_shapes", "animate_vertices", "choose_up", "fit_or_load", "load_shapes", "write_preview"]

Progress = Callable[[str, float], None]


def choose_up(mesh: UserMesh, front: str | None = None) -> str:
    """``z`` or ``y``: the axis convention under which a face is found looking the expected way.

    A quick pass (15,000 surface samples) decides most meshes; when it finds no face either way, a
    second pass with the fit's own sampling (40,000) is tried before giving up, because a face the
    fit itself would find must not be refused here (seen on a stylised head).  Errors are those of
    the first pass (its messages were tuned on cubes and sideways heads)."""
    errors: list[ValueError] = []
    for samples in (15000, 40000):
        found = []
        for up in ("z", "y"):
            R = axes_rotation(up, front)
            V = mesh.vertices @ R.T
            head = find_head(V, mesh.faces, mesh.path or "mesh")      # mesh problems: raised as they are
            hf = mesh.faces[np.isin(mesh.faces, head).all(1)]
            try:
                fr = find_face(V, hf, num_samples=samples)
                found.append((abs(fr.facing_deg), fr.symmetry_error, up))
            except LandmarkError as exc:
                if samples == 15000:
                    errors.append(exc)
        if found:
            return min(found)[2]
    facing = [e for e in errors if "looks toward" in str(e)]
    raise facing[0] if facing else errors[0]


def fit_or_load(mesh: UserMesh, topology: Any, fit_path: str | None = None, up: str = "auto",
                front: str | None = None, landmarks: str | None = None, vertex_group: str | None = None,
                progress: Progress | None = None) -> Fit:
    if fit_path:
        fit = load_fit(fit_path)
        fit.check_mesh(mesh)
        fit.check_template(topology)
        return fit
    if up == "auto":
        try:
            up = choose_up(mesh, front)
        except LandmarkError:
            if not landmarks:
                raise
            up = "z"          # a landmarks file places the face itself; its axes default to Blender's
    return fit_mesh(mesh, topology, up=up, front=front, landmarks_file=landmarks, vertex_group_file=vertex_group,
                    progress=progress)


def animate_vertices(fit: Fit, topology: Any, mesh: UserMesh, frames: np.ndarray, fps: float, sink: Any,
                     rest: np.ndarray | None = None, progress: Progress | None = None) -> None:
    """Write the character's ``(T, N, 3)`` animation into ``sink[t0:t1] = chunk`` (a stream writer or
    an array)."""
    from engine.retarget.transfer import Transfer

    tr = Transfer(fit, topology, rest, mesh.vertices)
    T = len(frames)
    t0 = 0
    for chunk in tr.frames(frames, fps):
        sink[t0:t0 + len(chunk)] = chunk
        t0 += len(chunk)
        if progress:
            progress("transfer", t0 / max(1, T))


def load_shapes(path: str) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float], dict[str, float]]:
    """``shapes.npz``: ``Basis`` (V, 3) and one (V, 3) array per key (absolute positions). Optional
    ``__meta__``: a JSON string ``{"slider_min": {key: v}, "slider_max": {key: v}}``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"shapes file not found: {p}")
    try:
        z = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{p} is not an .npz of arrays ({exc})") from None
    with z:
        if "Basis" not in z.files:
            raise ValueError(f"{p} has no 'Basis' array: shapes.npz needs Basis (V,3) and one (V,3) array per key")
        basis = np.asarray(z["Basis"], np.float64)
        meta = json.loads(str(z["__meta__"])) if "__meta__" in z.files else {}
        keys = {}
        for k in z.files:
            if k in ("Basis", "__meta__"):
                continue
            a = np.asarray(z[k], np.float64)
            if a.shape != basis.shape:
                raise ValueError(f"shape key {k!r} has shape {a.shape} but Basis has {basis.shape}")
            keys[k] = a
    if basis.ndim != 2 or basis.shape[1] != 3:
        raise ValueError(f"Basis must be (V, 3), got {basis.shape}")
    if not keys:
        raise ValueError(f"{p} holds no shape keys besides Basis")
    return basis, keys, meta.get("slider_min", {}), meta.get("slider_max", {})


def animate_shapes(frames: np.ndarray, fps: float, topology: Any, shapes_path: str, mesh: UserMesh | None,
                   fit_fn: Callable[[], Fit] | None, mode: str = "auto", warn: Callable[[str], None] | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Weights for the keys in ``shapes_path``; ``mode``: ``auto`` (fit, else names), ``fit``, ``names``."""
    from engine.retarget.names import classify
    from engine.retarget.semantics import channel_weights

    basis, keys, smin, smax = load_shapes(shapes_path)
    names = list(keys)
    path = "names"
    fit = None
    fit_problem = ""
    if mode in ("auto", "fit"):
        if fit_fn is None:
            if mode == "fit":
                raise ValueError("--retarget fit needs --target (the mesh the shape keys belong to)")
            fit_problem = "no --target mesh given"
        else:
            try:
                fit = fit_fn()
                path = "fit"
            except (FitError, LandmarkError, MeshInputError) as exc:
                if mode == "fit" or classify(names) == "unknown":
                    raise
                fit_problem = str(exc)
    if path == "fit":
        assert fit is not None and mesh is not None
        if len(basis) != len(mesh.vertices):
            raise ValueError(f"Basis has {len(basis)} vertices but --target has {len(mesh.vertices)}: "
                             "the shape keys must belong to the target mesh")
        res = _solve_by_fit(fit, topology, mesh, basis, keys, smin, smax, frames, fps, progress)
        res.update(path="fit", fit_residual=fit.residual)
        return res
    if classify(names) == "unknown":
        raise ValueError("none of the shape keys has an ARKit, VRM or Rhubarb name and there is no fit: "
                         "pass --target with the mesh so its keys can be solved geometrically")
    if warn is not None:
        warn(f"driving shape keys by their names (no geometric fit: {fit_problem})")
    w, reasons = channel_weights(frames, topology, fps, names)
    driven = [n for n in names if n in w]
    lo = np.array([float(smin.get(n, 0.0)) for n in driven])
    hi = np.array([float(smax.get(n, 1.0)) for n in driven])
    W = np.stack([w[n] for n in driven], 1) if driven else np.zeros((len(frames), 0))
    W = np.clip(W, lo, hi)
    return {"names": driven, "weights": W.astype(np.float32), "left_alone": [n for n in names if n not in w],
            "reasons": reasons, "path": "names", "why": fit_problem}


def _solve_by_fit(fit: Fit, topology: Any, mesh: UserMesh, basis: np.ndarray, keys: dict[str, np.ndarray],
                  smin: dict[str, float], smax: dict[str, float], frames: np.ndarray, fps: float,
                  progress: Progress | None) -> dict[str, Any]:
    from engine.retarget.shapekeys import solve_weights
    from engine.retarget.transfer import Transfer

    tr = Transfer(fit, topology, None, basis)
    head = fit.head_index
    hw = float(fit.meta["mouth_halfwidth"])
    centre = 0.5 * (basis[fit.lip_upper].mean(0) + basis[fit.lip_lower].mean(0))
    pos = np.nonzero((fit.weight > 0.2) & (np.linalg.norm(basis[head] - centre, axis=1) < 2.5 * hw))[0]
    region = head[pos]
    target = np.empty((len(frames), len(region), 3), np.float32)
    t0 = 0
    for chunk in tr.frames(frames, fps):
        target[t0:t0 + len(chunk)] = chunk[:, region] - basis[region][None]
        t0 += len(chunk)
    if progress:
        progress("transfer", 1.0)
    deltas = {n: (k - basis)[region] for n, k in keys.items()}
    res = solve_weights(deltas, target, lo=smin, hi=smax)
    if progress:
        progress("solve", 1.0)
    return {"names": res.names, "weights": res.weights, "left_alone": res.left_alone, "reasons": res.reasons,
            "relative_error": res.relative_error}


def write_preview(path: str, mesh: UserMesh, fit: Fit, topology: Any) -> None:
    """Front and side view: the user's mesh (grey), the fitted template (blue), its contact rows
    (red upper, green lower) and landmarks (black)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.fileio import atomic_path

    R = fit.axes
    V = mesh.vertices[fit.head_index] @ R.T
    X = fit.fitted_template @ R.T
    up = mesh.vertices[fit.lip_upper] @ R.T
    lo = mesh.vertices[fit.lip_lower] @ R.T
    lm = fit.landmarks @ R.T
    fig, axes = plt.subplots(1, 2, figsize=(9, 5))
    for ax, (a, b), title in zip(axes, ((0, 2), (1, 2)), ("front", "side")):
        ax.scatter(V[:, a], V[:, b], s=0.3, c="0.6")
        ax.scatter(X[:, a], X[:, b], s=0.3, c="tab:blue", alpha=0.5)
        ax.scatter(up[:, a], up[:, b], s=6, c="red")
        ax.scatter(lo[:, a], lo[:, b], s=6, c="green")
        ax.scatter(lm[:, a], lm[:, b], s=18, c="k", marker="x")
        ax.set_aspect("equal")
        ax.set_title(f"{title}: residual {fit.residual:.4f}")
        if title == "side":
            ax.invert_xaxis()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_retarget_cli(args: Any) -> int:
    """``python -m engine animate`` with ``--target`` and/or ``--shapes`` (see engine.cli_animate)."""
    from engine.audio import load_audio
    from engine.cli_animate import (FORMATS, _Progress, align_transcript, load_animator, open_output, read_transcript,
                                    resolve_postprocess)
    from engine.fileio import atomic_write

    out = Path(args.out) if args.out else None
    if args.shapes:
        if out is None or out.suffix.lower() != ".json":
            raise ValueError("with --shapes, --out must be a .json file (per-frame shape-key weights)")
    else:
        if not args.target:
            raise ValueError("--fit needs --target (the mesh the fit belongs to)")
        if out is not None and out.suffix.lower() not in FORMATS:
            raise ValueError(f"--out {out.name!r}: use .npy, .pc2 or .mdd (or --out-dir for an OBJ sequence)")
    if args.template or args.style:
        raise ValueError("--template/--style apply to the model's own topology; they cannot be combined with "
                         "--target/--shapes")
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    progress = _Progress(args.progress)
    mesh = load_user_mesh(args.target) if args.target else None
    wav = load_audio(args.audio)
    anim = load_animator(args)
    topology = anim.topology
    fps = float(args.fps or anim.fps)

    def get_fit() -> Fit:
        assert mesh is not None
        return fit_or_load(mesh, topology, fit_path=args.fit, up=args.up, front=args.front,
                           landmarks=args.landmarks, vertex_group=args.vertex_group_file, progress=progress)

    def warn(msg: str) -> None:
        if args.progress == "json":
            print(json.dumps({"event": "warning", "message": msg}), flush=True)
        print(f"warning: {msg}", file=sys.stderr)

    post = resolve_postprocess(getattr(args, "postprocess", None), topology)
    phones = align_transcript(wav, read_transcript(getattr(args, "transcript", None), post), warn)
    fit = get_fit() if (mesh is not None and not args.shapes) else None
    try:
        frames = anim.animate(wav, fps=fps, progress=progress, postprocess=post, transcript=phones)
        T = len(frames)
        if args.shapes:
            res = animate_shapes(frames, fps, topology, args.shapes, mesh, get_fit if mesh is not None else None,
                                 mode=args.retarget, warn=warn, progress=progress)
            doc = {"fps": fps, "names": res["names"], "weights": np.round(res["weights"], 5).tolist(),
                   "path": res["path"], "left_alone": res["left_alone"], "reasons": res["reasons"]}
            for k in ("relative_error", "fit_residual", "why"):
                if k in res:
                    doc[k] = res[k]
            assert out is not None
            with atomic_write(out, "w") as fh:
                json.dump(doc, fh)
            done = {"event": "done", "out": str(out), "frames": T, "keys": len(res["names"]), "fps": fps,
                    "path": res["path"]}
        else:
            assert fit is not None and mesh is not None
            N = len(mesh.vertices)
            if out is not None:
                with open_output(out, T, N, fps) as buf:
                    animate_vertices(fit, topology, mesh, frames, fps, buf, progress=progress)
                dest = str(out)
            else:
                from engine.exporters import write_obj_sequence
                allf = np.empty((T, N, 3), np.float32)
                animate_vertices(fit, topology, mesh, frames, fps, allf, progress=progress)
                write_obj_sequence(args.out_dir, allf, mesh.faces, progress=lambda f: progress("write", f))
                dest = str(args.out_dir)
            done = {"event": "done", "out": dest, "frames": T, "vertices": N, "fps": fps, "path": "fit",
                    "fit_residual": fit.residual}
    finally:
        progress.close()
    if args.progress == "json":
        print(json.dumps(done), flush=True)
    else:
        print(f"wrote {done['out']}: {T} frames ({done['path']} path) at {fps:g} fps", file=sys.stderr)
    return 0

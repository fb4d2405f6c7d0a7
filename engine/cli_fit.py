"""``python -m engine fit``: register the model's template to a user's head mesh (any topology).

    python -m engine fit --mesh head.obj [--landmarks lm.json] [--vertex-group-file face.json]
        --out head.fit.npz [--preview fit.png] [--up auto|y|z] [--front -y] [--checkpoint C]
        [--progress json]

A fit that is not good enough is refused (exit 2) with a message saying to place landmarks;
nothing is written then.  With ``--progress json`` the last line is
``{"event": "done", "out": ..., "residual": ..., "landmark_source": ..., ...}``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register", "run_fit"]


def add_mesh_options(p: Any) -> None:
    """Options shared by ``fit`` and ``animate --target``."""
    p.add_argument("--landmarks", help="JSON {landmark name: vertex index} overriding automatic landmarks "
                                       "(nose_tip, upper_lip, mouth_centre, lower_lip, mouth_corner_l, mouth_corner_r)")
    p.add_argument("--vertex-group-file", help="JSON list of the head's vertex indices (for a head inside a body mesh)")
    p.add_argument("--up", default="auto", help="up axis of the mesh file: auto (default), z (Blender) or y (OBJ convention)")
    p.add_argument("--front", default=None, help="direction the face looks in the file (default -y for Z-up, +z for Y-up)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("fit", help="fit the model's template to your own head mesh (any topology)",
                              description="Register the checkpoint's template to a head mesh of any topology.")
    p.add_argument("--mesh", required=True, help="head mesh (.obj/.ply/.npz)")
    p.add_argument("--out", required=True, help="fit file to write (.npz)")
    p.add_argument("--preview", help="PNG: the fitted template over the mesh, front and side")
    p.add_argument("--checkpoint", default="default", help="model .safetensors whose template is fitted (default: bundled)")
    add_mesh_options(p)
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar")
    p.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.checkpoint import load_checkpoint, resolve_checkpoint_path
    from engine.retarget.meshin import load_user_mesh
    from engine.retarget.run import fit_or_load, write_preview

    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise ValueError(f"--out {out.name!r}: fit files are .npz")
    if args.preview and Path(args.preview).suffix.lower() != ".png":
        raise ValueError(f"--preview {args.preview!r}: must be a .png")
    progress = _progress(args.progress)
    mesh = load_user_mesh(args.mesh)
    topology = load_checkpoint(resolve_checkpoint_path(args.checkpoint)).topology
    fit = fit_or_load(mesh, topology, up=args.up, front=args.front, landmarks=args.landmarks,
                      vertex_group=args.vertex_group_file, progress=progress)
    fit.save(out)
    if args.preview:
        write_preview(args.preview, mesh, fit, topology)
    info = {k: fit.meta[k] for k in ("residual", "landmark_error", "coverage", "landmark_source", "scale",
                                      "head_vertices", "lip_pairs", "seconds", "up")}
    if args.progress == "json":
        print(json.dumps({"event": "done", "out": str(out), **info}), flush=True)
    else:
        print(f"wrote {out}: residual {fit.residual:.4f} of the face size, landmarks {fit.meta['landmark_source']}, "
              f"{fit.meta['seconds']:.1f} s", file=sys.stderr)
    return 0


def _progress(mode: str) -> Any:
    from engine.cli_animate import _Progress
    return _Progress(mode)

"""``python -m engine serve [--checkpoint C] [--device D]``: the warm engine (see :mod:`engine.serve`)."""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="keep the model loaded and answer JSON-line requests on stdin/stdout (Blender add-on)",
        description="Warm engine: loads the checkpoint once, then runs requests ({\"id\", \"argv\"} JSON lines on "
                    "stdin, the same arguments as the CLI commands) and answers with JSON events tagged with "
                    "each request's id. {\"cancel\": id} stops a request; EOF or {\"shutdown\": true} exits.")
    p.add_argument("--checkpoint", default="default",
                   help="checkpoint to load before 'ready' (requests may name others; default: 'default')")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-warmup", action="store_true",
                   help="skip running 1 s of silence through the model before 'ready' (it is skipped anyway "
                        "when a request is already waiting)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    # A missing dependency must end the server at once with its ModuleNotFoundError (the add-on
    # turns that into "Install Engine Dependencies"), not later as a confusing per-request error.
    import numpy  # noqa: F401
    import torch  # noqa: F401

    import engine.cli_animate  # noqa: F401
    from engine.serve import Server, preload_model, protect_stdout, warm_model

    server = Server(out=protect_stdout())
    return server.run(preload=preload_model(server.animators, args.checkpoint, args.device),
                      warmup=None if args.no_warmup else warm_model(server.animators))

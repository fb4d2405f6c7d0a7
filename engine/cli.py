"""``python -m engine <command>`` (also installed as ``parley``).

Built-in commands: ``info`` (describe a checkpoint) and ``evaluate`` (metrics for a predicted
animation against ground truth). Further commands live in their own modules so each owner
edits only their file: every module ``engine/cli_<name>.py`` (and the modules listed in
:data:`EXTRA_COMMAND_MODULES`) that defines ``register(subparsers)`` is picked up
automatically. ``register`` adds a sub-parser and sets ``func=handler`` where
``handler(args) -> int``.

Expected user errors (bad audio, wrong mesh, bad checkpoint, missing files, bad values) print
one ``error: ...`` line to stderr and exit with status 2, no traceback. When the command was
run with ``--progress json`` the error is also printed as ``{"event":"error","message":...}``
on stdout, which is what the Blender add-on reads.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import math
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["EXPECTED_ERRORS", "EXTRA_COMMAND_MODULES", "build_parser", "command_modules", "main"]

EXTRA_COMMAND_MODULES: list[str] = ["training.cli"]
EXIT_USAGE = 2


def _expected_errors() -> tuple[type[BaseException], ...]:
    # ValueError covers AudioError, TopologyMismatch, CheckpointError, DatasetError.
    return (ValueError, FileNotFoundError, IsADirectoryError, PermissionError)


EXPECTED_ERRORS = _expected_errors()


def command_modules() -> list[str]:
    """``engine.cli_*`` modules (sorted) followed by :data:`EXTRA_COMMAND_MODULES`."""
    import engine

    found = sorted(f"engine.{m.name}" for m in pkgutil.iter_modules(engine.__path__) if m.name.startswith("cli_"))
    return found + [m for m in EXTRA_COMMAND_MODULES if m not in found]


def _register_plugins(sub: argparse._SubParsersAction) -> None:
    for name in command_modules():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # optional module not present: command simply not offered
            print(f"warning: command module {name} failed to import ({exc})", file=sys.stderr)
            continue
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take down `info`/`evaluate`
            print(f"warning: command module {name} failed to import ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        register: Callable[[Any], None] | None = getattr(module, "register", None)
        if callable(register):
            register(sub)


# --------------------------------------------------------------------------- info
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a checkpoint (model kind, topology, encoder, data card, metrics)")
    p.add_argument("checkpoint", nargs="?", default="default",
                   help="shipped checkpoint name or path to a .safetensors file (default: 'default')")
    p.add_argument("--list", action="store_true", help="list the shipped checkpoints (name, kind, size)")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.set_defaults(func=_cmd_info)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _cmd_info_list(as_json: bool) -> int:
    from engine.checkpoint import ALIASES, CheckpointError, read_metadata, shipped_checkpoints

    rows = []
    for name, path in shipped_checkpoints().items():
        try:
            kind = read_metadata(path).get("kind", "?")
        except CheckpointError as exc:
            kind = f"unreadable ({exc})"
        alias = ALIASES.get(name) if path.stem != name else None
        rows.append({"name": name, "kind": kind, "size_bytes": path.stat().st_size, "path": str(path),
                     "alias_of": alias})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no shipped checkpoints in engine/assets")
        return 0
    table = [("name", "kind", "size", "")] + [
        (r["name"], str(r["kind"]), f"{r['size_bytes'] / 1e6:.1f} MB", f"alias of {r['alias_of']}" if r["alias_of"] else "")
        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + ("  " + row[3] if row[3] else ""))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from engine.checkpoint import read_metadata, resolve_checkpoint_path

    if args.list:
        return _cmd_info_list(args.json)
    path = resolve_checkpoint_path(args.checkpoint)
    meta = read_metadata(path)
    if args.json:
        print(json.dumps(dict(meta, path=str(path), size_bytes=path.stat().st_size), indent=2, sort_keys=True))
        return 0
    topo = meta.get("topology", {})
    rows = [
        ("checkpoint", str(path)),
        ("size", f"{path.stat().st_size / 1e6:.2f} MB" + (" (fp16 weights)" if meta.get("half") else "")),
        ("kind", meta.get("kind")),
        ("fps", meta.get("fps")),
        ("topology", f"{topo.get('name')}: {topo.get('num_vertices', '?')} vertices, fingerprint {topo.get('fingerprint')}"),
        ("masks", ", ".join(topo.get("masks", [])) or "-"),
        ("encoder", _fmt(meta.get("encoder"))),
        ("created", meta.get("created", "-")),
    ]
    _print_rows(rows)
    for title in ("data_card", "metrics", "config"):
        section = meta.get(title) or {}
        if section:
            print(f"\n{title.replace('_', ' ')}:")
            _print_rows([(f"  {k}", _fmt(v)) for k, v in sorted(section.items())])
    return 0


def _print_rows(rows: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


# --------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of a predicted animation against ground truth")
    p.add_argument("--pred", required=True, help="predicted animation (.npy (T,V*3)|(T,V,3), .pc2, .mdd)")
    p.add_argument("--gt", required=True, help="ground-truth animation, same formats")
    p.add_argument("--template", required=True, help="neutral mesh: .obj/.ply/.npz topology or .npy (V,3) vertices")
    p.add_argument("--masks", help="region masks JSON ({name: [indices]} or a <stem>.masks.json sidecar); "
                                   "default: masks stored with --template")
    p.add_argument("--phones", help="phone timings JSON ({'phones': [[label, start, end], ...]}) for bilabial closure")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of both animations (default 30)")
    p.add_argument("--lrp-threshold", type=float, default=None, help="distance threshold for LRP (dataset units)")
    p.add_argument("--closure-threshold", type=float, default=None,
                   help="inner-lip gap counted as closed (default: 0.5%% of the face's bounding-box diagonal)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_cmd_evaluate)


def _load_template(path: Path):
    import numpy as np

    from engine.topology import Topology

    if not path.exists():
        raise FileNotFoundError(f"template not found: {path}")
    if path.suffix.lower() == ".npy":
        v = np.load(path, allow_pickle=False)
        return np.asarray(v, dtype=np.float64).reshape(-1, 3), {}
    topo = Topology.load(path)
    return topo.vertices, dict(topo.masks)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.dataset import load_phones
    from engine.exporters import read_animation
    from engine.metrics import evaluate_all
    from engine.topology import load_masks_json

    template, masks = _load_template(Path(args.template))
    num_v = len(template)
    if args.masks:
        mpath = Path(args.masks)
        if not mpath.exists():
            raise FileNotFoundError(f"masks file not found: {mpath}")
        try:
            raw, _ = load_masks_json(mpath)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{mpath}: invalid JSON ({exc})") from None
        masks = {k: np.asarray(v, dtype=np.int64) for k, v in raw.items()}
    for k, m in masks.items():
        if len(m) and (int(np.max(m)) >= num_v or int(np.min(m)) < 0):
            raise ValueError(f"mask {k!r} has indices outside the template's {num_v} vertices")
    pred, _ = read_animation(args.pred, num_vertices=num_v)
    gt, _ = read_animation(args.gt, num_vertices=num_v)
    phones = None
    if args.phones:
        ppath = Path(args.phones)
        if not ppath.exists():
            raise FileNotFoundError(f"phones file not found: {ppath}")
        phones = load_phones(ppath)
    result = evaluate_all(pred, gt, template, masks, phones=phones, fps=args.fps,
                          lrp_threshold=args.lrp_threshold, closure_threshold=args.closure_threshold)
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()},
                         indent=2))
        return 0
    missing = [m for m in ("lips", "upper_face") if m not in masks]
    _print_rows([("metric", "value")] + [(k, _fmt(v)) for k, v in result.items()])
    if missing:
        print(f"(no {', '.join(missing)} mask: metrics that need it were skipped)")
    return 0


# --------------------------------------------------------------------------- entry
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine",
                                     description="Parley: speech-driven 3D facial animation engine")
    sub = parser.add_subparsers(dest="command", metavar="command")
    _add_info(sub)
    _add_evaluate(sub)
    _register_plugins(sub)
    return parser


def _report_error(args: argparse.Namespace | None, message: str) -> None:
    if args is not None and getattr(args, "progress", None) == "json":
        print(json.dumps({"event": "error", "message": message}), flush=True)
    print(f"error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except EXPECTED_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        _report_error(args, message)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _report_error(args, "interrupted")
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

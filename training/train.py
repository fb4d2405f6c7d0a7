"""Train a Parley model from a TOML config.

    python -m training.train --config training/configs/synthtalk_default.toml [--out runs/NAME]
                             [--resume] [--no-eval] [section.key=value ...]

The harness is split by job: :mod:`training.config` (dataclass config, overrides),
:mod:`training.corpus` (clips + phone timings), :mod:`training.features` (frozen-encoder cache),
:mod:`training.batches` (seeded epoch plans and crops), :mod:`training.distributed` (torchrun),
:mod:`training.state` (optimizer/RNG state without pickle), :mod:`training.trainer` (the loop,
checkpoints, exact resume), :mod:`training.reports` (log + loss curve) and
:mod:`training.evaluate`.  What differs per method is its recipe (:mod:`training.recipes`),
chosen by ``[model] kind``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from training.config import Config, ConfigError, apply_overrides, load_config
from training.trainer import Trainer

__all__ = ["main", "Config", "ConfigError", "Trainer", "apply_overrides", "load_config"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="TOML config (training/configs/*.toml)")
    ap.add_argument("--out", default=None, help="run directory (default runs/<config name>)")
    ap.add_argument("--resume", action="store_true", help="continue a killed run in --out exactly where it stopped")
    ap.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=3")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        out = Path(args.out or f"runs/{cfg.name}")
        if not args.resume and (out / "trainer_state.json").exists():
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        trainer = Trainer(cfg, out, resume=args.resume)
    except (ConfigError, tomllib.TOMLDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer.fit()
    res = trainer.finish(evaluate=not args.no_eval)
    if trainer.dist.is_main and res.get("summary"):
        print(json.dumps(res["summary"], indent=1))
    if trainer.dist.world > 1:
        import torch.distributed as tdist
        tdist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m training.crossmodal {renders,regressor,transcoder,evaluate} --config C [key=value ...]``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.crossmodal", description=__doc__)
    ap.add_argument("stage", choices=["renders", "regressor", "transcoder", "evaluate"])
    ap.add_argument("--config", default=None, help="the stage's TOML file (training/configs/crossmodal_<stage>.toml)")
    ap.add_argument("overrides", nargs="*", help="key=value (TOML literals) overriding the config")
    a = ap.parse_intermixed_args(argv)
    if a.stage == "renders":
        from training.crossmodal.config import RenderConfig, load_stage_config
        from training.crossmodal.renders import build_renders
        print(build_renders(load_stage_config(RenderConfig, a.config, a.overrides)))
    elif a.stage == "regressor":
        from training.crossmodal.config import RegressorConfig, load_stage_config
        from training.crossmodal.train_regressor import train_regressor
        print(train_regressor(load_stage_config(RegressorConfig, a.config, a.overrides)))
    elif a.stage == "transcoder":
        from training.crossmodal.config import TranscoderConfig, load_stage_config
        from training.crossmodal.train_transcoder import train_transcoder
        print(train_transcoder(load_stage_config(TranscoderConfig, a.config, a.overrides)))
    else:
        from training.crossmodal.evaluate import main as eval_main
        return eval_main(a.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())

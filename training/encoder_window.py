"""Re-declare a checkpoint's Whisper window mode, for A/B measurements only.

    python -m training.encoder_window engine/assets/default.safetensors --window fitted \\
        --out runs/default_fitted_untuned.safetensors

Writes a copy whose encoder spec (``encoder`` and ``config.encoders``) says ``window = "fitted"``
(or ``"full"``) and whose data card records that it was relabelled, not trained that way.  The
weights are untouched, so the copy shows what the *model as trained* does when fed the other
window's features at inference: the "no fine-tune" row of the window A/B in the README.  A
checkpoint meant for users should be trained or fine-tuned on the mode it declares
(``model.params.encoders = [{kind = "whisper", window = "fitted"}]``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.encoders import WINDOW_MODES, EncoderSpec
from engine.fileio import atomic_path

__all__ = ["relabel_window"]


def relabel_window(src: Path, dst: Path, window: str) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from engine.checkpoint import read_metadata

    meta = read_metadata(src)

    def fix(spec: dict) -> dict:
        return EncoderSpec.from_dict({**spec, "window": window}).to_dict()

    meta["encoder"] = fix(meta["encoder"])
    if meta["config"].get("encoders"):
        meta["config"]["encoders"] = [fix(s) for s in meta["config"]["encoders"]]
    meta["data_card"] = dict(meta.get("data_card") or {},
                             window_relabelled=f"{Path(src).name} relabelled to window={window!r} without training")
    with safe_open(str(src), "pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    with atomic_path(dst) as tmp:
        save_file(tensors, str(tmp), metadata={"parley": json.dumps(meta)})
    return Path(dst)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.encoder_window", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--window", required=True, choices=WINDOW_MODES)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    print(relabel_window(args.checkpoint, args.out, args.window))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The README's with/without-Wav2Sem tables: mean of seeds 0 and 1 ± half their difference.

    python -m training.wav2sem_seed_table out/w2s_bench/results.json selftalk faceformer

reads a ``training.benchmark`` results JSON whose rows are named ``<host>_<none|c|m>_s<seed>``
(the run folders of the fine-tunes, e.g. ``runs/w2s/selftalk_c_s1/model.safetensors``) and prints
one markdown table per set and host. Why ± half the difference: with two seeds that is the
distance from the mean to either run, so a gap between rows smaller than it is not a result.
"""
from __future__ import annotations

import json
import sys

COLUMNS = [("lve_l2", 1e3, "LVE l2 (mm)"), ("lve_sq", 1e6, "LVE sq (mm²)"), ("mve", 1e3, "MVE (mm)"),
           ("fdd", 1e7, "FDD (×1e-7 m²)"), ("aperture_corr", 1.0, "aperture r"), ("closure_mid", 1.0, "closure mid")]
VARIANTS = {"none": "without Wav2Sem", "c": "+ Wav2Sem_c", "m": "+ Wav2Sem_m"}


def tables(results: dict, hosts: list[str]) -> str:
    out = []
    for s in results["sets"]:
        for host in hosts:
            out += [f"{s['set']} ({s['clips']} clips); each cell is the mean of seeds 0 and 1 ± half their difference:",
                    "", f"| {host} | " + " | ".join(c[2] for c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
            for v, label in VARIANTS.items():
                rows = [s["rows"].get(f"{host}_{v}_s{k}") for k in (0, 1)]
                if None in rows:
                    continue
                cells = []
                for key, scale, _ in COLUMNS:
                    a, b = (r[key] * scale for r in rows)
                    cells.append(f"{(a + b) / 2:.4f} ± {abs(a - b) / 2:.4f}")
                out.append(f"| {label} | " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0]) as fh:
        print(tables(json.load(fh), args[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

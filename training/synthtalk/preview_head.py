"""Preview images of the SynthTalk heads and rig, for looking at (not for tests).

    python -m training.synthtalk.preview_head --out out/head_preview

writes ``identities.png`` (all 12 neutral heads, front + three-quarter), ``controls.png``
(each rig control at 0 / 0.5 / 1 on the default head) and ``sequence.png`` (a scripted
jaw / pucker / smile / blink sequence as a contact sheet with its aperture curve).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from engine.render import contact_sheet, render_frames
from training.synthtalk.head import NUM_IDENTITIES, build_head, identity
from training.synthtalk.rig import CONTROLS, Rig


def _save(img: np.ndarray, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tmp = path + ".tmp.png"
    plt.imsave(tmp, img)
    os.replace(tmp, path)


def identities_sheet(path: str, size: int = 192) -> str:
    tiles = []
    for i in range(NUM_IDENTITIES):
        h = build_head(identity(i))
        f = render_frames(h.vertices[None], h.topology, size=size, supersample=2)[0]
        q = render_frames(h.vertices[None], h.topology, size=size, view="three_quarter", supersample=2)[0]
        tiles.append(np.concatenate([f, q], axis=1))
    rows = [np.concatenate(tiles[r * 4:(r + 1) * 4], axis=1) for r in range(NUM_IDENTITIES // 4)]
    _save(np.concatenate(rows, axis=0), path)
    return path


def controls_sheet(path: str, size: int = 160, controls: list[str] | None = None) -> str:
    h = build_head(identity(10))
    rig = Rig(h)
    rows = []
    for c in controls or CONTROLS:
        W = np.zeros((3, len(CONTROLS)))
        W[:, CONTROLS.index(c)] = [0.0, 0.5, 1.0]
        imgs = render_frames(rig.pose(W), h.topology, size=size, supersample=2)
        rows.append(np.concatenate(list(imgs), axis=1))
    _save(np.concatenate(rows, axis=0), path)
    return path


def scripted_weights(fps: float = 30.0) -> tuple[dict[str, np.ndarray], list[list]]:
    """~4 s: jaw open/close, bilabial closure, pucker, smile, blink; with matching fake phones."""
    T = int(4.0 * fps)
    t = np.arange(T) / fps

    def bump(c: float, w: float) -> np.ndarray:
        return np.exp(-0.5 * ((t - c) / w) ** 2)

    w = {
        "jaw_open": 0.8 * bump(0.6, 0.15) + 0.35 * bump(1.5, 0.12) + 0.5 * bump(3.3, 0.15),
        "lips_close": bump(1.1, 0.06) + bump(2.9, 0.06),
        "pucker": bump(2.0, 0.18),
        "smile": bump(3.4, 0.3),
        "blink_l": bump(2.5, 0.05),
        "blink_r": bump(2.5, 0.05),
        "brow_raise": 0.7 * bump(0.6, 0.3),
    }
    phones = [["sil", 0.0, 0.4], ["aa", 0.4, 0.85], ["m", 0.85, 1.25], ["ae", 1.25, 1.75],
              ["w", 1.75, 1.9], ["uw", 1.9, 2.3], ["sil", 2.3, 2.75], ["b", 2.75, 3.05], ["iy", 3.05, 3.7],
              ["sil", 3.7, 4.0]]
    return w, phones


def sequence_sheet(path: str, fps: float = 30.0) -> str:
    h = build_head(identity(10))
    w, phones = scripted_weights(fps)
    X = Rig(h).pose(w)
    contact_sheet(X, h.topology, path, fps=fps, phones=phones, n=12, title="SynthTalk rig: scripted sequence")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/head_preview")
    ap.add_argument("--only", choices=["identities", "controls", "sequence"], default=None)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    jobs = {"identities": identities_sheet, "controls": controls_sheet, "sequence": sequence_sheet}
    for name, fn in jobs.items():
        if args.only in (None, name):
            print(fn(os.path.join(args.out, f"{name}.png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

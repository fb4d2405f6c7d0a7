"""``make demo``: the main job end to end on the bundled defaults.

Animates the bundled sample utterance (a natural piper voice that SynthTalk training never
heard) with the default checkpoint onto the default head, with the post-processing the CLI and
the add-on use by default (``lipclose``), then writes what a user would look
at: a PC2 point cache, a contact sheet with the phone timeline (every /b p m/ marked), mouth
close-ups of those frames with and without ``lipclose``, an MP4 with sound (when ffmpeg
exists), and a Blender scene of the head speaking with its sound strip plus rendered stills.

    python -m training.demo --out out/demo
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "engine" / "assets"


def _step(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def animate_sample(out: Path, device: str) -> tuple[np.ndarray, np.ndarray, object, float]:
    """The user path (CLI/add-on default: ``lipclose`` on) and, for the comparison picture, the
    model's own output (``postprocess="none"``)."""
    from engine.exporters import write_npy, write_pc2
    from engine.inference import Animator
    from engine.postprocess import DEFAULT_POSTPROCESS

    t0 = time.perf_counter()
    animator = Animator.from_checkpoint("default", device=device)
    frames = animator.animate(ASSETS / "sample.wav", postprocess=DEFAULT_POSTPROCESS)
    dt = time.perf_counter() - t0
    model_only = animator.animate(ASSETS / "sample.wav", postprocess="none")
    write_pc2(out / "sample.pc2", frames, animator.fps)
    write_npy(out / "sample.npy", frames)
    _step(f"animated {frames.shape[0]} frames x {frames.shape[1]} vertices at {animator.fps:g} fps "
          f"(postprocess {DEFAULT_POSTPROCESS}) in {dt:.1f} s (model load included) -> {out / 'sample.pc2'}")
    return frames, model_only, animator.topology, animator.fps


BILABIAL = ("B", "P", "M")
OPEN = ("AA", "AE", "AH", "AO", "AW", "AY")


def sheet_frames(phones: list, gap: np.ndarray, fps: float, n: int = 12) -> tuple[list[int], list[int]]:
    """(frames to show, the bilabial ones): for every /b p m/ the frame inside the phone where the
    lips are closest (what scrubbing shows), then the widest frame of open vowels to fill ``n``."""
    def span(s: float, e: float) -> np.ndarray:
        a = int(np.floor(s * fps + 0.5))
        return np.arange(a, max(a + 1, int(np.floor(e * fps + 0.5))))[: len(gap)]

    bil = [int(f[np.argmin(gap[f])]) for lab, s, e in phones if lab in BILABIAL and len(f := span(s, e))]
    opens = sorted(((float(gap[f].max()), int(f[np.argmax(gap[f])])) for lab, s, e in phones
                    if lab in OPEN and len(f := span(s, e))), reverse=True)
    fill = [f for _, f in opens if f not in bil][: max(0, n - len(bil))]
    return sorted(set(bil[:n]) | set(fill)), bil[:n]


def pictures(out: Path, frames: np.ndarray, model_only: np.ndarray, topology, fps: float) -> None:
    from engine.metrics import default_closure_threshold, inner_lip_gap
    from engine.render import FFmpegNotFound, contact_sheet, write_video

    meta = json.loads((ASSETS / "sample.phones.json").read_text())
    masks = topology.masks
    up, lo = masks["lip_upper_inner"], masks["lip_lower_inner"]
    shown, bil = sheet_frames(meta["phones"], inner_lip_gap(frames, up, lo), fps)
    contact_sheet(frames, topology.faces, out / "sample_sheet.png", fps, phones=meta["phones"],
                  upper_inner=up, lower_inner=lo, frame_indices=shown, marked=bil,
                  title=f"default model + lipclose: \"{meta['text']}\"\n"
                        "red: every /b p m/ at its closest frame (gap in mm); the others: widest open vowels")
    _step(f"contact sheet -> {out / 'sample_sheet.png'}")
    thr = default_closure_threshold(np.asarray(topology.vertices), masks.get("face"))
    lips_sheet(out / "sample_lips.png", {"model alone": model_only, "+ lipclose (what you get)": frames},
               topology, bil, fps, thr, meta)
    _step(f"mouth close-ups at /b p m/ -> {out / 'sample_lips.png'}")
    try:
        write_video(frames, topology.faces, out / "sample.mp4", fps, audio_wav=ASSETS / "sample.wav")
        _step(f"video -> {out / 'sample.mp4'}")
    except FFmpegNotFound as exc:
        _step(f"no MP4: {exc}")


def lips_sheet(path: Path, rows: dict[str, np.ndarray], topology, cols: list[int], fps: float, threshold: float,
               meta: dict) -> None:
    """Mouth close-ups, one row per output, on the same /b p m/ frames (one camera for all)."""
    from matplotlib.figure import Figure

    from engine.fileio import atomic_path
    from engine.metrics import inner_lip_gap
    from engine.render import render_frames
    from training.benchmark_plots import mouth_view

    masks = topology.masks
    up, lo = masks["lip_upper_inner"], masks["lip_lower_inner"]
    stack = np.concatenate([np.asarray(v, dtype=np.float32)[cols] for v in rows.values()])
    imgs = render_frames(stack, mouth_view(topology, masks, np.asarray(topology.vertices)), size=150, supersample=2)
    phone_of = [next((lab for lab, s, e in meta["phones"] if s <= (f + 0.5) / fps < e), "?") for f in cols]
    fig = Figure(figsize=(1.5 * len(cols) + 1.8, 1.6 * len(rows) + 0.7))
    fig.suptitle(f"every /b p m/ of the sample, mouth close-up (contact: gap < {threshold * 1000:.1f} mm)", fontsize=9)
    gs = fig.add_gridspec(len(rows), len(cols), wspace=0.03, hspace=0.3, left=0.14, right=0.99, top=0.86, bottom=0.02)
    for i, (name, fr) in enumerate(rows.items()):
        gap = inner_lip_gap(np.asarray(fr)[cols], up, lo)
        for j, f in enumerate(cols):
            ax = fig.add_subplot(gs[i, j])
            ax.imshow(imgs[i * len(cols) + j])
            ax.set_xticks([])
            ax.set_yticks([])
            shut = gap[j] < threshold
            ax.set_title(f"{f / fps:.2f}s /{phone_of[j].lower()}/ {gap[j] * 1000:.1f}mm",
                         fontsize=6, color="#2ca02c" if shut else "#d62728")
            if j == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def blender_scene(out: Path) -> None:
    """Bake with the add-on's headless batch path (real Blender via the bpy module), then render."""
    blend = out / "sample.blend"
    cmd = [sys.executable, str(REPO / "blender_addon" / "batch.py"), "--mesh", str(ASSETS / "default_head.obj"),
           "--audio", str(ASSETS / "sample.wav"), "--mode", "cache", "--set-range", "--out", str(blend)]
    subprocess.run(cmd, check=True)
    _step(f"blender scene -> {blend}")
    render = [sys.executable, "-m", "training.render_stills", str(blend), str(out / "sample_still"),
              "--frames", "25", "60"]
    subprocess.run(render, check=True, cwd=REPO)
    _step(f"rendered stills -> {out}/sample_still_*.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/demo", type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-blender", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    frames, model_only, topology, fps = animate_sample(args.out, args.device)
    pictures(args.out, frames, model_only, topology, fps)
    if not args.skip_blender:
        blender_scene(args.out)
    _step("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``make demo``: the main job end to end on the bundled defaults.

Animates the bundled sample utterance (a natural piper voice that SynthTalk training never
heard) with the default checkpoint onto the default head, then writes what a user would look
at: a PC2 point cache, a contact sheet with the phone timeline, an MP4 with sound (when ffmpeg
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


def animate_sample(out: Path, device: str) -> tuple[np.ndarray, object, float]:
    from engine.exporters import write_npy, write_pc2
    from engine.inference import Animator

    t0 = time.perf_counter()
    animator = Animator.from_checkpoint("default", device=device)
    frames = animator.animate(ASSETS / "sample.wav")
    dt = time.perf_counter() - t0
    write_pc2(out / "sample.pc2", frames, animator.fps)
    write_npy(out / "sample.npy", frames)
    _step(f"animated {frames.shape[0]} frames x {frames.shape[1]} vertices at {animator.fps:g} fps "
          f"in {dt:.1f} s (model load included) -> {out / 'sample.pc2'}")
    return frames, animator.topology, animator.fps


def pictures(out: Path, frames: np.ndarray, topology, fps: float) -> None:
    from engine.render import FFmpegNotFound, contact_sheet, write_video

    meta = json.loads((ASSETS / "sample.phones.json").read_text())
    masks = topology.masks
    contact_sheet(frames, topology.faces, out / "sample_sheet.png", fps, phones=meta["phones"],
                  upper_inner=masks.get("lip_upper_inner"), lower_inner=masks.get("lip_lower_inner"),
                  title=f"default model: \"{meta['text']}\"")
    _step(f"contact sheet -> {out / 'sample_sheet.png'}")
    try:
        write_video(frames, topology.faces, out / "sample.mp4", fps, audio_wav=ASSETS / "sample.wav")
        _step(f"video -> {out / 'sample.mp4'}")
    except FFmpegNotFound as exc:
        _step(f"no MP4: {exc}")


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
    frames, topology, fps = animate_sample(args.out, args.device)
    pictures(args.out, frames, topology, fps)
    if not args.skip_blender:
        blender_scene(args.out)
    _step("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

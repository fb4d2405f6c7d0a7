"""Retarget benchmark and measurements for the README (issue 10, items 7-8).

    python -m training.retarget_bench [--checkpoint default] [--out training/figures/retarget]

Measures, on every test character of :mod:`training.characters` (3 mm remesh) and the shipped
checkpoint's animation of the bundled sample plus the real-speech test clips (when
``data/realspeech`` exists): fit residual and time, lip-gap correlation with the template's,
bilabial closure rate on the character's own lips vs the template's (``engine.metrics``
definition: gap below 0.5% of the face's bounding-box diagonal at /p b m/ midpoints), motion
outside the face, weight-solve error for the rigs with keys.  Then the speed targets on a
~20k-vertex head: fit, transfer of 60 s at 30 fps, a 52-key solve.  Writes ``results.json`` and
``contact_sheet.png`` into ``--out``.  (Here and not in ``engine/`` because it builds the test
characters from ``training.synthtalk``; the engine never imports ``training``.)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _clips(root: Path) -> list[tuple[str, Path, list]]:
    from engine.dataset import load_phones
    out = [("sample", root / "engine/assets/sample.wav", load_phones(root / "engine/assets/sample.phones.json"))]
    rs = root / "data" / "realspeech"
    if (rs / "wav").is_dir():
        for w in sorted((rs / "wav").glob("*.wav")):
            p = rs / "phones" / (w.stem + ".json")
            if p.exists():
                out.append((w.stem, w, load_phones(p)))
    return out


def measure_characters(anim, clips, out_dir: Path) -> dict:
    from engine.metrics import (
        bilabial_closure_rate,
        default_closure_threshold,
        inner_lip_gap,
    )
    from engine.retarget.fit import fit_mesh
    from engine.retarget.meshin import check_mesh
    from engine.retarget.run import animate_shapes
    from engine.retarget.transfer import Transfer
    from training.characters import CHARACTERS, build

    topo = anim.topology
    m = topo.masks
    up_t, lo_t = m["lip_upper_inner"], m["lip_lower_inner"]
    thr_t = default_closure_threshold(topo.vertices, m["face"])
    anims = []
    for name, wav, phones in clips:
        anims.append((name, anim.animate(str(wav)), phones))
    fps = anim.fps
    T_all = np.concatenate([a for _, a, _ in anims])
    tpl_gap = inner_lip_gap(T_all, up_t, lo_t)

    def closure(frames_list, up, lo, thr):
        hits, n = 0.0, 0
        for (name, _, phones), fr in zip(anims, frames_list):
            r = bilabial_closure_rate(fr, phones, fps, up, lo, thr)
            from engine.metrics import bilabial_frames
            k = len(bilabial_frames(phones, fps, len(fr)))
            if k:
                hits += r * k
                n += k
        return hits / max(n, 1), n

    tpl_closure, n_bil = closure([a for _, a, _ in anims], up_t, lo_t, thr_t)
    rows = {"template": {"vertices": topo.num_vertices, "closure": tpl_closure, "bilabials": n_bil}}
    sheet = {}
    for cname in CHARACTERS:
        c = build(cname, 0.003)
        mesh = check_mesh(c.vertices, c.faces, cname)
        t0, p0 = time.perf_counter(), time.process_time()
        fit = fit_mesh(mesh, topo, up=c.up)
        t_fit, c_fit = time.perf_counter() - t0, time.process_time() - p0
        tr = Transfer(fit, topo, None, c.vertices)
        outs = []
        t0 = time.perf_counter()
        for _, fr, _ in anims:
            outs.append(np.concatenate(list(tr.frames(fr, fps))))
        t_tr = time.perf_counter() - t0
        face = fit.head_index[fit.weight > 0.5]
        thr_c = default_closure_threshold(c.vertices, face)
        cl, _ = closure(outs, fit.lip_upper, fit.lip_lower, thr_c)
        allo = np.concatenate(outs)
        g = inner_lip_gap(allo, fit.lip_upper, fit.lip_lower)
        disp = np.linalg.norm(allo - c.vertices[None].astype(np.float32), axis=2)
        outside = np.setdiff1d(np.arange(len(c.vertices)), fit.head_index[fit.weight > 0.01])
        row = {
            "vertices": len(c.vertices), "fit_residual": fit.residual, "fit_seconds": t_fit, "fit_cpu_seconds": c_fit,
            "landmark_error": fit.meta["landmark_error"], "lip_pairs": len(fit.lip_upper),
            "gap_corr": float(np.corrcoef(g, tpl_gap)[0, 1]), "closure": cl, "closure_diff": cl - tpl_closure,
            "rest_gap_over_threshold": float(inner_lip_gap(c.vertices[None], fit.lip_upper, fit.lip_lower)[0] / thr_c),
            "outside_face_max_over_face_max": float(disp[:, outside].max() / disp.max()) if len(outside) else 0.0,
            "transfer_fps": len(allo) / t_tr,
        }
        if c.shapes:
            shapes = out_dir / f"{cname}_shapes.npz"
            np.savez(shapes, Basis=c.vertices, **c.shapes)
            t0 = time.perf_counter()
            res = animate_shapes(anims[0][1], fps, topo, str(shapes), mesh, lambda f=fit: f)
            row["solve_relative_error"] = res["relative_error"]
            row["solve_keys"] = len(res["names"])
            row["solve_seconds_incl_transfer"] = time.perf_counter() - t0
            shapes.unlink()
        rows[cname] = row
        print(cname, json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
        sheet[cname] = (c, fit, outs[0])
    return rows, sheet, anims[0]


def contact_sheet(sheet: dict, first: tuple, topo, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")

    from engine.render import render_frames

    _, frames, phones = first
    fps = 30.0
    # frames: silence, bilabials (me, map, please), open vowels
    picks = []
    for lab, want in (("sil", 1), ("M", 2), ("P", 1), ("AE", 1), ("IY", 1)):
        for p in phones:
            if p[0] == lab and len([q for q in picks if q[0] == lab]) < want:
                picks.append((lab, round((p[1] + p[2]) / 2 * fps)))
    picks = sorted(picks[:6], key=lambda q: q[1])
    idx = [min(i, len(frames) - 1) for _, i in picks]
    rows = [("template", frames[idx], topo.faces)]
    for cname, (c, fit, out) in sheet.items():
        head = fit.head_index
        pos = -np.ones(len(c.vertices), np.int64)
        pos[head] = np.arange(len(head))
        hf = pos[c.faces[np.all(pos[c.faces] >= 0, axis=1)]]
        canon = c.to_canonical(out[idx][:, head].reshape(-1, 3)).reshape(len(idx), len(head), 3)
        rows.append((cname, canon.astype(np.float32), hf))
    rendered = [render_frames(fr, faces, size=320, supersample=2) for _, fr, faces in rows]
    for suffix, crop in (("", None), ("_mouth", (0.55, 0.85, 0.28, 0.72))):
        _sheet(rows, rendered, picks, idx, crop, path.with_name(path.stem + suffix + path.suffix))


def _sheet(rows, rendered, picks, idx, crop, path: Path) -> None:
    import matplotlib.pyplot as plt

    from engine.fileio import atomic_path

    fig, axes = plt.subplots(len(rows), len(idx), figsize=(1.7 * len(idx), (1.8 if crop is None else 1.0) * len(rows)))
    for r, (label, _, _) in enumerate(rows):
        imgs = rendered[r]
        if crop is not None:
            n = imgs.shape[1]
            imgs = imgs[:, int(crop[0] * n):int(crop[1] * n), int(crop[2] * n):int(crop[3] * n)]
        for k in range(len(idx)):
            ax = axes[r, k]
            ax.imshow(imgs[k])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"/{picks[k][0]}/ f{idx[k]}", fontsize=8)
            if k == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def measure_speed(anim, first_frames: np.ndarray) -> dict:
    from engine.retarget.fit import fit_mesh
    from engine.retarget.meshin import check_mesh
    from engine.retarget.shapekeys import solve_weights
    from engine.retarget.transfer import Transfer
    from training.characters import build

    topo = anim.topology
    c = build("arkit", 0.0013)
    mesh = check_mesh(c.vertices, c.faces)
    fit_mesh(mesh, topo, up="z")          # warm the template's landmark cache (once per process)
    t0, p0 = time.perf_counter(), time.process_time()
    fit = fit_mesh(mesh, topo, up="z")
    t_fit, c_fit = time.perf_counter() - t0, time.process_time() - p0
    T = 1800
    reps = int(np.ceil(T / len(first_frames)))
    frames = np.concatenate([first_frames] * reps)[:T]
    tr = Transfer(fit, topo, None, c.vertices)
    out = np.empty((256, len(c.vertices), 3), np.float32)
    t0, p0 = time.perf_counter(), time.process_time()
    for chunk in tr.frames(frames, 30.0):
        out[:len(chunk)] = chunk          # stand-in for the file writer (not timed separately)
    t_tr, c_tr = time.perf_counter() - t0, time.process_time() - p0
    # 52 keys: the rig's 17 ARKit keys and 35 random mixtures of them (realistic size and overlap)
    rng = np.random.default_rng(0)
    hw = float(fit.meta["mouth_halfwidth"])
    centre = c.vertices[fit.lip_upper].mean(0)
    region = fit.head_index[(fit.weight > 0.2) & (np.linalg.norm(c.vertices[fit.head_index] - centre, axis=1) < 2.5 * hw)]
    base = [c.shapes[n][region] - c.vertices[region] for n in c.shapes]
    deltas = {}
    for i in range(52):
        if i < len(base):
            deltas[f"k{i}"] = base[i]
        else:
            mix = rng.choice(len(base), 3, replace=False)
            deltas[f"k{i}"] = sum(rng.random() * base[j] for j in mix)
    target = np.empty((T, len(region), 3), np.float32)
    t0 = time.perf_counter()
    k = 0
    for chunk in tr.frames(frames, 30.0):
        target[k:k + len(chunk)] = chunk[:, region] - c.vertices[region][None]
        k += len(chunk)
    t_target = time.perf_counter() - t0
    t0, p0 = time.perf_counter(), time.process_time()
    res = solve_weights(deltas, target)
    t_solve, c_solve = time.perf_counter() - t0, time.process_time() - p0
    import os
    return {"load_average_1min": os.getloadavg()[0], "fit_cpu_seconds": c_fit, "transfer_60s_cpu_seconds": c_tr,
            "solve_cpu_seconds": c_solve,
            "vertices": len(c.vertices), "fit_seconds": t_fit, "transfer_60s_seconds": t_tr,
            "solve_keys": len(res.names), "solve_region_vertices": len(region), "solve_frames": T,
            "solve_seconds": t_solve, "solve_fps": T / t_solve, "solve_target_seconds": t_target,
            "solve_relative_error": res.relative_error}


def main() -> None:
    import torch

    from engine.inference import Animator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--out", default="training/figures/retarget")
    ap.add_argument("--skip-characters", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    root = Path(__file__).resolve().parents[1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    anim = Animator.from_checkpoint(args.checkpoint, device="cpu")
    clips = _clips(root)
    results = {"checkpoint": args.checkpoint, "clips": [c[0] for c in clips]}
    if not args.skip_characters:
        rows, sheet, first = measure_characters(anim, clips, out)
        results["characters"] = rows
        contact_sheet(sheet, first, anim.topology, out / "contact_sheet.png")
        first_frames = first[1]
    else:
        first_frames = anim.animate(str(clips[0][1]))
    if args.skip_speed:
        old = out / "results.json"
        if old.exists():
            results["speed"] = json.loads(old.read_text()).get("speed")
        (out / "results.json").write_text(json.dumps(results, indent=1))
        return
    speed = measure_speed(anim, first_frames)
    results["speed"] = speed
    print("speed", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in speed.items()}))
    print(f"targets (wall clock, load average {speed['load_average_1min']:.1f} on this machine): "
          f"fit {speed['fit_seconds']:.2f} s / 10 s = {speed['fit_seconds'] / 10:.2f}; "
          f"transfer {speed['transfer_60s_seconds']:.2f} s / 2 s = {speed['transfer_60s_seconds'] / 2:.2f}; "
          f"solve {speed['solve_fps']:.0f} fps / 2000 = {speed['solve_fps'] / 2000:.2f}")
    print(f"CPU time of this process (what an idle 2-core machine would take, give or take threading): "
          f"fit {speed['fit_cpu_seconds']:.2f} s; transfer {speed['transfer_60s_cpu_seconds']:.2f} s; "
          f"solve {speed['solve_frames'] / speed['solve_cpu_seconds']:.0f} fps")
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

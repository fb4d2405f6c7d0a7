"""Real-speech evaluation set: human recordings, force-aligned, animated by the SynthTalk rig.

Source: the pocketsphinx 5.1.1 *source* distribution ships real recorded English with transcripts:
``test/data/librivox/*.wav`` (five sentences read from *Sense and Sensibility*, LibriVox, public
domain) and ``test/data/cards/*.wav`` (five short utterances naming playing cards, CMU, BSD-style).
We fetch it with pip (``pip download --no-binary pocketsphinx --no-deps pocketsphinx==5.1.1``), align
every transcript with pocketsphinx, and drive the same co-articulation model and rig as the
synthetic corpus on a test identity with a neutral style.

What it is and is not: the meshes are *pseudo ground truth* (what our rig does with the real phone
timings), not captured faces. It measures whether a model trained on synthetic voices tracks the
timing of human speech: lip error against the pseudo ground truth, bilabial closure rate, and
mouth-aperture correlation. It cannot measure realism against real faces.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

__all__ = ["POCKETSPHINX_VERSION", "build_realspeech", "fetch_pocketsphinx_source", "real_utterances"]

POCKETSPHINX_VERSION = "5.1.1"
SDIST = f"pocketsphinx-{POCKETSPHINX_VERSION}.tar.gz"
_WANTED = ("test/data/librivox/", "test/data/cards/")


def default_cache() -> Path:
    return Path(os.environ.get("PARLEY_CACHE", Path.home() / ".cache" / "parley"))


def fetch_pocketsphinx_source(cache: str | os.PathLike | None = None) -> Path:
    """Download (once) and unpack the recordings of the pocketsphinx sdist; returns ``.../test/data``."""
    cache = Path(cache) if cache is not None else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / f"pocketsphinx-{POCKETSPHINX_VERSION}"
    data = root / "test" / "data"
    if (data / "librivox").is_dir() and (data / "cards").is_dir():
        return data
    tar_path = cache / SDIST
    if not tar_path.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", "pocketsphinx", "--no-deps",
               f"pocketsphinx=={POCKETSPHINX_VERSION}", "-d", str(cache)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not tar_path.exists():
            raise RuntimeError(
                f"could not download the pocketsphinx source distribution ({' '.join(cmd)}): "
                f"{res.stderr.strip()[-400:]}. With no network, put {SDIST} into {cache} by hand."
            )
    prefix = f"pocketsphinx-{POCKETSPHINX_VERSION}/"
    with tarfile.open(tar_path, "r:gz") as tf:
        members = []
        for m in tf.getmembers():
            name = m.name
            if not name.startswith(prefix) or not any(name[len(prefix):].startswith(w) for w in _WANTED):
                continue
            if not m.isfile() or ".." in Path(name).parts or name.startswith("/"):
                continue
            members.append(m)
        tmp = cache / f".extract{os.getpid()}"
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: refuse links and odd modes too
            tf.extractall(tmp, members=members, filter="data")
        else:  # pragma: no cover - members were already checked above
            tf.extractall(tmp, members=members)
    (root / "test").mkdir(parents=True, exist_ok=True)
    if data.exists():
        shutil.rmtree(data)
    os.replace(tmp / prefix.rstrip("/") / "test" / "data", data)
    shutil.rmtree(tmp, ignore_errors=True)
    return data


def real_utterances(data: Path) -> list[dict]:
    """[{"id", "wav", "text", "source", "licence"}] for the LibriVox and cards recordings."""
    out = []
    for wav in sorted((data / "librivox").glob("*.wav")):
        txt = wav.with_suffix(".txt")
        if not txt.exists():
            continue
        num = re.search(r"-(\d+)$", wav.stem)
        out.append({"id": f"lv{num.group(1) if num else wav.stem}", "wav": wav, "text": txt.read_text().strip(),
                    "source": "LibriVox 'Sense and Sensibility' ch. 1 (pocketsphinx test data)",
                    "licence": "public domain (LibriVox)"})
    trans = data / "cards" / "cards.transcription"
    if trans.exists():
        for line in trans.read_text().splitlines():
            m = re.match(r"\s*<s>(.*)</s>\s*\((\w+)\)", line)
            if not m:
                continue
            wav = data / "cards" / f"{m.group(2)}.wav"
            if wav.exists():
                out.append({"id": f"cards{m.group(2)}", "wav": wav, "text": m.group(1).strip(),
                            "source": "pocketsphinx test data 'cards' (CMU)", "licence": "BSD-2-Clause (pocketsphinx)"})
    if not out:
        raise RuntimeError(f"no recordings with transcripts found under {data}")
    return out


def build_realspeech(out: str | os.PathLike, cache: str | os.PathLike | None = None, identity: int = 10,
                     fps: float = 30.0, seed: int = 0, overwrite: bool = False) -> dict:
    """Write the real-speech evaluation set (split "test" only) in the SynthTalk format."""
    import soundfile as sf

    from engine.audio import num_frames

    from .align import align
    from .coarticulation import CONTROLS, SpeakerStyle, animate_controls
    from .generate import (
        _atomic_bytes,
        _json_bytes,
        _npy_bytes,
        _SingleThreadBLAS,
        _wav_bytes,
    )
    from .head import build_head
    from .head import identity as identity_params
    from .rig import Rig

    t0 = time.time()
    out = Path(out)
    if (out / "dataset.json").exists() and not overwrite:
        existing = json.loads((out / "dataset.json").read_text())
        if existing.get("name") != "SynthTalk-realspeech":
            raise FileExistsError(f"{out} already holds another dataset; choose another folder or pass --overwrite")
        return existing  # already built (keeps `make data` re-runnable)
    for sub in ("wav", "vertices_npy", "controls", "phones", "meta"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    data = fetch_pocketsphinx_source(cache)
    utts = real_utterances(data)
    head = build_head(identity_params(identity))
    rig = Rig(head)
    subject = f"synth_{identity:02d}"
    style = SpeakerStyle.neutral()
    clips, seconds = [], 0.0
    for k, u in enumerate(utts):
        wav, sr = sf.read(str(u["wav"]), dtype="float32", always_2d=True)
        wav = wav.mean(axis=1)
        if sr != 16000:
            from .voices import to_16k

            wav = to_16k(wav, sr)
        wav = (np.round(np.clip(wav, -1, 1) * 32767) / 32767).astype(np.float32)
        phones, words = align(wav, u["text"])
        T = num_frames(len(wav), fps)
        rng = np.random.default_rng([seed, 404, k])
        controls, events = animate_controls(phones, T, fps, style, rng, audio=wav, return_events=True)
        with _SingleThreadBLAS():
            verts = rig.pose(controls).astype(np.float32)
        name = f"{subject}_{u['id']}"
        _atomic_bytes(out / "wav" / f"{name}.wav", _wav_bytes(wav))
        _atomic_bytes(out / "vertices_npy" / f"{name}.npy", _npy_bytes(verts.reshape(T, -1)))
        _atomic_bytes(out / "controls" / f"{name}.npy", _npy_bytes(controls))
        _atomic_bytes(out / "phones" / f"{name}.json", _json_bytes({
            "phones": [list(p) for p in phones], "words": [list(w) for w in words], "text": u["text"]}))
        _atomic_bytes(out / "meta" / f"{name}.json", _json_bytes({
            "clip": name, "split": "test", "subject": subject, "identity": identity, "text": u["text"],
            "source": u["source"], "licence": u["licence"], "original_file": u["wav"].name,
            "voice": {"name": "human", "engine": "recording"}, "style": style.to_dict(),
            "timing_source": "pocketsphinx forced alignment", "fps": fps, "num_frames": T,
            "duration_s": round(len(wav) / 16000, 5), "events": events, "pseudo_ground_truth": True}))
        clips.append(name)
        seconds += len(wav) / 16000
    templates = {subject: head.vertices.astype(np.float32)}
    buf = io.BytesIO()
    np.savez(buf, **templates)
    _atomic_bytes(out / "templates.npz", buf.getvalue())
    import pickle

    _atomic_bytes(out / "templates.pkl", pickle.dumps(templates, protocol=4))
    head.topology.save(out / "topology.npz")
    _atomic_bytes(out / "splits.json", _json_bytes({"test": {"subjects": [subject], "clips": clips}}))
    summary = {
        "name": "SynthTalk-realspeech", "synthetic": False, "pseudo_ground_truth": True,
        "fps": fps, "sample_rate": 16000, "num_vertices": int(head.vertices.shape[0]),
        "topology_fingerprint": head.topology.fingerprint(), "controls": CONTROLS,
        "counts": {"test": len(clips)}, "total_clips": len(clips),
        "hours": {"test": round(seconds / 3600, 5)}, "total_hours": round(seconds / 3600, 5),
        "subjects": {"test": [subject]}, "sources": sorted({u["source"] for u in utts}),
        "build_seconds": round(time.time() - t0, 1),
    }
    _atomic_bytes(out / "dataset.json", _json_bytes(summary))
    card = f"""# SynthTalk real-speech evaluation set (pseudo ground truth)

**What this is.** {len(clips)} real recordings of human English speech ({seconds:.1f} s in total) with their
transcripts, taken from the pocketsphinx {POCKETSPHINX_VERSION} source distribution's test data:
five sentences read from Jane Austen's *Sense and Sensibility* (LibriVox, public domain) and five short
utterances naming playing cards (CMU pocketsphinx test data, BSD-style licence). Each transcript was
force-aligned to its audio with pocketsphinx (10 ms resolution), and the phone timings drove Parley's
SynthTalk co-articulation model (neutral speaking style) and rig on test identity `{subject}`.

**What it is not.** The meshes are *pseudo ground truth*: what the rig does with real phone timings, not a
captured face. Use it to measure how a model trained on synthetic voices behaves on human audio (lip
vertex error against this pseudo ground truth, bilabial closure rate at /p b m/, mouth-aperture
correlation), never as evidence of realism against real faces. Alignment errors of pocketsphinx (phones
are at least 30 ms long) carry into the targets.

Format: the SynthTalk/FaceFormer layout (`wav/`, `vertices_npy/`, `templates.pkl|npz`, `topology.npz`,
`phones/`, `meta/`, `controls/`, `splits.json` with split `test` only). Clips: {', '.join(clips)}.
"""
    _atomic_bytes(out / "DATASET_CARD.md", card.encode("utf-8"))
    return summary

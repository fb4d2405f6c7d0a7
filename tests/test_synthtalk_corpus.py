"""End to end: build the small SynthTalk corpus and check it like a reviewer would."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")

from engine.audio import num_frames
from engine.metrics import default_closure_threshold, inner_lip_gap
from engine.topology import Topology
from training.synthtalk import generate as G
from training.synthtalk.text import sentence_split
from training.synthtalk.voices import voice_by_name

BILABIAL = {"P", "B", "M"}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthtalk_small")
    cfg = G.preset("small", seed=0)
    G.generate(out, cfg, workers=2, progress=False)
    return out


def _clips(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "vertices_npy").glob("*.npy"))


def _mid_frames(phones, labels, n):
    return [min(n - 1, int(np.rint((s + e) / 2 * 30))) for lab, s, e in phones if lab in labels]


def test_format_files_and_shapes(corpus):
    cfg = G.preset("small")
    clips = _clips(corpus)
    assert len(clips) == cfg.total_clips == 24
    for name in ("templates.pkl", "templates.npz", "topology.npz", "splits.json", "dataset.json", "DATASET_CARD.md"):
        assert (corpus / name).is_file(), name
    topo = Topology.load(corpus / "topology.npz")
    V = topo.num_vertices
    assert 3000 <= V <= 6000
    for m in ("lips", "upper_face", "face", "eyelids", "lip_upper_inner", "lip_lower_inner"):
        assert m in topo.masks
    with np.load(corpus / "templates.npz") as z:
        templates = {k: z[k] for k in z.files}
    assert sorted(templates) == ["synth_00", "synth_01", "synth_08", "synth_10"]
    assert all(t.shape == (V, 3) and t.dtype == np.float32 for t in templates.values())
    from engine.fileio import safe_load_pickle
    pk = safe_load_pickle(corpus / "templates.pkl")
    assert all(np.array_equal(pk[k], templates[k]) for k in templates)
    for c in clips:
        assert (corpus / "wav" / f"{c}.wav").is_file()
        for sub in ("phones", "meta"):
            json.loads((corpus / sub / f"{c}.json").read_text())
        arr = np.load(corpus / "vertices_npy" / f"{c}.npy")
        assert arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[1] == V * 3
    card = (corpus / "DATASET_CARD.md").read_text()
    assert "Synthetic data" in card and "licence" in card.lower() and "held-out" in card


def test_frame_counts_match_audio_length_at_30fps(corpus):
    import soundfile as sf
    for c in _clips(corpus):
        info = sf.info(str(corpus / "wav" / f"{c}.wav"))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        T = np.load(corpus / "vertices_npy" / f"{c}.npy", mmap_mode="r").shape[0]
        assert T == num_frames(info.frames, 30) == round(info.frames * 30 / 16000)
        meta = json.loads((corpus / "meta" / f"{c}.json").read_text())
        assert meta["num_frames"] == T
        ph = json.loads((corpus / "phones" / f"{c}.json").read_text())["phones"]
        assert abs(ph[-1][2] - info.frames / 16000) < 1e-3


def test_lips_closed_at_bilabials_and_open_on_open_vowels(corpus):
    topo = Topology.load(corpus / "topology.npz")
    up, lo = topo.masks["lip_upper_inner"], topo.masks["lip_lower_inner"]
    closed_thr = default_closure_threshold(topo.vertices, topo.masks["face"])  # ~1 mm
    bil, opn = [], []
    for c in _clips(corpus):
        x = np.load(corpus / "vertices_npy" / f"{c}.npy").reshape(-1, topo.num_vertices, 3)
        gap = inner_lip_gap(x, up, lo)
        phones = json.loads((corpus / "phones" / f"{c}.json").read_text())["phones"]
        bil += [gap[f] for f in _mid_frames(phones, BILABIAL, len(gap))]
        opn += [gap[f] for f, (lab, s, e) in zip(_mid_frames(phones, {"AA", "AE"}, len(gap)),
                                                  [p for p in phones if p[0] in ("AA", "AE")]) if e - s > 0.05]
    assert len(bil) >= 15 and len(opn) >= 10
    assert max(bil) < closed_thr, f"lips not closed at a bilabial: gap {max(bil):.5f} >= {closed_thr:.5f}"
    opn = np.array(opn)
    assert opn.min() > closed_thr
    assert np.mean(opn > 4 * closed_thr) >= 0.9, "open vowels should open the mouth clearly"


def test_held_out_voices_only_in_test_and_sentence_splits(corpus):
    splits = json.loads((corpus / "splits.json").read_text())
    assert set(splits) == {"train", "val", "test"}
    for split, spec in splits.items():
        for c in spec["clips"]:
            meta = json.loads((corpus / "meta" / f"{c}.json").read_text())
            assert meta["split"] == split
            assert meta["subject"] in spec["subjects"]
            if split != "test":
                assert not voice_by_name(meta["voice"]["name"]).held_out, c
            assert sentence_split(meta["sentence_id"]) == split
    test_voices = {json.loads((corpus / "meta" / f"{c}.json").read_text())["voice"]["name"] for c in splits["test"]["clips"]}
    assert "flite_awb" in test_voices  # the held-out voice is really used
    summary = json.loads((corpus / "dataset.json").read_text())
    assert summary["counts"] == {"train": 12, "val": 4, "test": 8}
    assert summary["heldout_voices"] == ["flite_awb"]


def test_same_seed_gives_identical_bytes(corpus, tmp_path):
    """Re-render some clips in this process (1 worker) and compare with the 2-worker build."""
    cfg = G.preset("small", seed=0)
    plans = G.plan_clips(cfg)
    for sub in ("wav", "vertices_npy", "controls", "phones", "meta"):
        (tmp_path / sub).mkdir()
    for p in plans[::6]:
        G.render_clip(p, tmp_path)
        for sub, ext in (("vertices_npy", "npy"), ("wav", "wav"), ("phones", "json")):
            a = (corpus / sub / f"{p.name}.{ext}").read_bytes()
            b = (tmp_path / sub / f"{p.name}.{ext}").read_bytes()
            assert a == b, f"{sub}/{p.name}.{ext} differs between builds"
    # a different seed changes the plan (subjects' sentences and voices)
    other = G.plan_clips(G.preset("small", seed=1))
    assert [p.name for p in other] != [p.name for p in plans]


def test_engine_dataset_loader_reads_the_corpus(corpus):
    ds_mod = pytest.importorskip("engine.dataset")
    ds = ds_mod.FaceFormerDataset(ds_mod.DatasetConfig(root=corpus), split="train")
    assert len(ds) == 12 and not ds.problems
    item = ds[0]
    assert item is not None


def test_presets_and_bad_input():
    full = G.preset("full")
    assert full.total_clips >= 2000
    assert len(full.train_voices) + len(full.heldout_voices) >= 10
    assert sorted(i for v in full.subjects.values() for i in v) == list(range(12))
    assert G.preset("full", clips=100).total_clips == pytest.approx(100, abs=6)
    with pytest.raises(KeyError, match="unknown preset"):
        G.preset("huge")
    with pytest.raises(ValueError, match="held_out"):
        G.CorpusConfig("x", {"train": [0]}, {"train": 1}, ["flite_awb"], [])


def test_existing_corpus_is_kept_or_refused(corpus):
    before = (corpus / "dataset.json").read_bytes()
    # same config: nothing to do (so `make data` can be re-run), nothing rewritten
    assert G.generate(corpus, G.preset("small"), workers=1, progress=False)["total_clips"] == 24
    assert (corpus / "dataset.json").read_bytes() == before
    # another config: refused unless --overwrite
    with pytest.raises(FileExistsError, match="--overwrite"):
        G.generate(corpus, G.preset("small", seed=3), workers=1, progress=False)


@pytest.mark.slow
def test_realspeech_set_builds(tmp_path):
    from training.synthtalk.realspeech import build_realspeech
    s = build_realspeech(tmp_path / "real")
    assert s["total_clips"] == 10 and s["counts"] == {"test": 10}
    root = tmp_path / "real"
    topo = Topology.load(root / "topology.npz")
    splits = json.loads((root / "splits.json").read_text())
    assert list(splits) == ["test"] and len(splits["test"]["clips"]) == 10
    card = (root / "DATASET_CARD.md").read_text()
    assert "pseudo ground truth" in card and "LibriVox" in card
    import soundfile as sf
    for c in splits["test"]["clips"]:
        T = np.load(root / "vertices_npy" / f"{c}.npy", mmap_mode="r").shape
        assert T[1] == topo.num_vertices * 3
        assert T[0] == num_frames(sf.info(str(root / "wav" / f"{c}.wav")).frames, 30)
        words = json.loads((root / "phones" / f"{c}.json").read_text())["words"]
        assert words, c

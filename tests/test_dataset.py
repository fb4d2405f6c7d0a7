"""engine.dataset on tiny fake FaceFormer corpora built in tmp_path."""
from __future__ import annotations

import json
import logging
import os
import pickle

import numpy as np
import pytest
import soundfile as sf

from engine.audio import num_frames
from engine.dataset import (
    BIWI_SPLITS,
    VOCASET_SPLITS,
    DatasetConfig,
    DatasetError,
    FaceFormerDataset,
    SplitSpec,
    collate,
    parse_clip_name,
    resample_frames,
)
from engine.fileio import UnsafePickleError

V = 4


def make_corpus(root, subjects=("subA", "subB"), sentences=(1, 2, 3), mesh_fps=30, seconds=0.5, templates="npz",
                wav_rate=16000):
    (root / "wav").mkdir(parents=True)
    (root / "vertices_npy").mkdir()
    rng = np.random.default_rng(0)
    tmpl = {s: rng.normal(size=(V, 3)).astype(np.float32) for s in subjects}
    for s in subjects:
        for k in sentences:
            name = f"{s}_sentence{k:02d}"
            sf.write(root / "wav" / f"{name}.wav", 0.1 * rng.normal(size=int(wav_rate * seconds)).astype(np.float32),
                     wav_rate, subtype="PCM_16")
            t = num_frames(int(16000 * seconds), mesh_fps)
            # frame index encoded in x of vertex 0 so resampling is observable
            verts = np.repeat(tmpl[s][None], t, 0)
            verts[:, 0, 0] = np.arange(t)
            np.save(root / "vertices_npy" / f"{name}.npy", verts.reshape(t, V * 3))
    if templates == "npz":
        np.savez(root / "templates.npz", **tmpl)
    else:
        (root / "templates.pkl").write_bytes(pickle.dumps(tmpl, protocol=2))
    return tmpl


def test_parse_clip_name():
    assert parse_clip_name("FaceTalk_170728_03272_TA_sentence01") == ("FaceTalk_170728_03272_TA", "sentence01", 1)
    assert parse_clip_name("F2_e01") == ("F2", "e01", 1)
    assert parse_clip_name("synth_03_s0142") == ("synth_03", "s0142", 142)


def test_predefined_splits():
    assert len(VOCASET_SPLITS["train"].subjects) == 8
    assert VOCASET_SPLITS["val"].contains("FaceTalk_170811_03275_TA_sentence21")
    assert not VOCASET_SPLITS["val"].contains("FaceTalk_170811_03275_TA_sentence20")
    assert BIWI_SPLITS["train"].contains("M5_e32") and BIWI_SPLITS["val"].contains("F2_e33")
    assert BIWI_SPLITS["test_b"].contains("M6_e40") and not BIWI_SPLITS["test_a"].contains("M6_e40")


def test_items_alignment_and_collate(tmp_path):
    tmpl = make_corpus(tmp_path)
    ds = FaceFormerDataset(DatasetConfig(tmp_path), "train")  # no splits.json: everything is train
    assert len(ds) == 6 and ds.problems == [] and ds.subjects == ["subA", "subB"]
    item = ds[0]
    assert item["name"] == "subA_sentence01" and item["subject"] == "subA"
    assert item["vertices"].shape == (15, V, 3) and item["vertices"].dtype == np.float32
    assert item["audio"].dtype == np.float32 and num_frames(len(item["audio"]), 30) == item["num_frames"] == 15
    np.testing.assert_array_equal(item["template"], tmpl["subA"])
    assert item["phones"] is None
    batch = collate([ds[0], ds[1]])
    assert batch["vertices"].shape == (2, 15, V, 3) and batch["mask"].all()
    assert batch["audio"].shape[0] == 2 and batch["name"] == ["subA_sentence01", "subA_sentence02"]


def test_collate_pads_with_mask():
    a = {"name": "a", "subject": "s", "audio": np.ones(100, np.float32), "vertices": np.ones((3, V, 3)),
         "template": np.zeros((V, 3)), "phones": None, "num_frames": 3}
    b = dict(a, name="b", audio=np.ones(50, np.float32), vertices=np.full((2, V, 3), 2.0), num_frames=2)
    out = collate([a, b])
    assert out["mask"].tolist() == [[True, True, True], [True, True, False]]
    assert out["audio"][1, 50:].abs().sum() == 0 and out["audio_lengths"].tolist() == [100, 50]
    assert float(out["vertices"][1, 2, 0, 0]) == 2.0  # padded with the last real frame


def test_60_to_30_fps_keeps_every_second_frame(tmp_path):
    make_corpus(tmp_path, subjects=("s",), sentences=(1,), mesh_fps=60)
    ds = FaceFormerDataset(DatasetConfig(tmp_path, mesh_fps=60, fps=30), "train")
    v = ds[0]["vertices"]
    assert v.shape[0] == 15
    np.testing.assert_array_equal(v[:, 0, 0], np.arange(0, 30, 2))  # source frames 0, 2, 4, ...


def test_resample_frames_linear():
    x = np.arange(5, dtype=np.float32)[:, None]       # 5 frames at 25 fps span 0.16 s
    y = resample_frames(x, 25, 30)                    # 30 fps samples at 0, 1/30, ... <= 0.16 s: 5 frames
    np.testing.assert_allclose(y[:, 0], [0, 25 / 30, 50 / 30, 75 / 30, 100 / 30], rtol=1e-6)
    np.testing.assert_array_equal(resample_frames(x, 30, 30), x)


def test_vertices_longer_than_audio_are_trimmed_and_shorter_reported(tmp_path):
    make_corpus(tmp_path, subjects=("s",), sentences=(1, 2))
    long = np.load(tmp_path / "vertices_npy" / "s_sentence01.npy")
    np.save(tmp_path / "vertices_npy" / "s_sentence01.npy", np.concatenate([long, long[:5]]))  # 20 frames, audio 15
    np.save(tmp_path / "vertices_npy" / "s_sentence02.npy", long[:10])  # 10 frames, audio 15
    ds = FaceFormerDataset(DatasetConfig(tmp_path), "train")
    assert [c.frames for c in ds.clips] == [15, 10]
    assert ds[1]["vertices"].shape[0] == 10 and num_frames(len(ds[1]["audio"]), 30) == 10
    assert len(ds.problems) == 1 and "s_sentence02.npy" in ds.problems[0] and "audio trimmed" in ds.problems[0]


def test_broken_files_reported_by_name_not_crashing(tmp_path, caplog):
    make_corpus(tmp_path)
    os.remove(tmp_path / "wav" / "subA_sentence02.wav")
    np.save(tmp_path / "vertices_npy" / "subA_sentence03.npy", np.zeros((15, 7)))       # wrong width
    (tmp_path / "wav" / "subB_sentence01.wav").write_bytes(b"RIFFjunk")                  # corrupt audio
    (tmp_path / "vertices_npy" / "subB_sentence02.npy").write_bytes(b"garbage")         # unreadable npy
    np.save(tmp_path / "vertices_npy" / "ghost_sentence01.npy", np.zeros((15, V * 3)))  # no template
    sf.write(tmp_path / "wav" / "ghost_sentence01.wav", np.zeros(8000, np.float32), 16000)
    with caplog.at_level(logging.WARNING):
        ds = FaceFormerDataset(DatasetConfig(tmp_path), "train")
    assert ds.names == ["subA_sentence01", "subB_sentence03"]
    assert ds[0]["vertices"].flags.writeable
    text = "\n".join(ds.problems)
    for needle in ("subA_sentence02.npy: no audio", "subA_sentence03.npy: shape (15, 7)", "subB_sentence01.wav",
                   "subB_sentence02.npy: unreadable", "'ghost' has no template"):
        assert needle in text, needle
    assert len(ds.problems) == 5 and "subB_sentence01.wav" in caplog.text


def test_no_usable_clip_raises_with_problems(tmp_path):
    make_corpus(tmp_path, subjects=("s",), sentences=(1,))
    os.remove(tmp_path / "wav" / "s_sentence01.wav")
    with pytest.raises(DatasetError, match="no usable clip.*s_sentence01.npy: no audio"):
        FaceFormerDataset(DatasetConfig(tmp_path), "train")


def test_splits_json_and_config_splits(tmp_path):
    make_corpus(tmp_path)
    (tmp_path / "splits.json").write_text(json.dumps({
        "train": {"subjects": ["subA"], "sentences": {"from": 1, "to": 2}},
        "val": {"subjects": ["subA"], "sentences": [3]},
        "test": ["subB_sentence02"],
    }))
    cfg = DatasetConfig(tmp_path)
    assert FaceFormerDataset(cfg, "train").names == ["subA_sentence01", "subA_sentence02"]
    assert FaceFormerDataset(cfg, "val").names == ["subA_sentence03"]
    assert FaceFormerDataset(cfg, "test").names == ["subB_sentence02"]
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        FaceFormerDataset(cfg, "dev")
    cfg2 = DatasetConfig(tmp_path, splits={"x": SplitSpec(subjects=["subB"], sentences=(2, 3))})
    assert FaceFormerDataset(cfg2, "x").names == ["subB_sentence02", "subB_sentence03"]


def test_pickle_templates_and_malicious_pickle(tmp_path):
    tmpl = make_corpus(tmp_path, templates="pkl")
    ds = FaceFormerDataset(DatasetConfig(tmp_path), "train")
    np.testing.assert_array_equal(ds[0]["template"], tmpl["subA"])

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "templates.pkl").write_bytes(pickle.dumps({"subA": Evil()}))
    with pytest.raises(UnsafePickleError, match="templates.pkl"):
        FaceFormerDataset(DatasetConfig(tmp_path), "train")
    assert not (tmp_path / "pwned").exists()


def test_phones_and_resampled_audio(tmp_path):
    make_corpus(tmp_path, subjects=("s",), sentences=(1,), wav_rate=22050)
    (tmp_path / "phones").mkdir()
    (tmp_path / "phones" / "s_sentence01.json").write_text(json.dumps({"phones": [["m", 0.0, 0.1]], "text": "m"}))
    item = FaceFormerDataset(DatasetConfig(tmp_path), "train")[0]
    assert item["phones"] == [("m", 0.0, 0.1)]
    assert len(item["audio"]) == 8000 and item["num_frames"] == 15

"""engine.checkpoint: safetensors round trip, registry, half precision, refusing pickles and foreign files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.checkpoint import (
    CheckpointError,
    build_model,
    load_checkpoint,
    read_metadata,
    register_model,
    save_checkpoint,
)
from engine.topology import Topology


def tiny_topology() -> Topology:
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    return Topology(v, np.array([[0, 1, 2], [1, 3, 2]]), {"lips": [0, 1], "upper_face": [3], "face": [0, 1, 2, 3]},
                    fps=30.0, name="tiny")


@register_model("test_tiny")
class TinyNet(torch.nn.Module):
    def __init__(self, hidden: int, num_vertices: int):
        super().__init__()
        self.lin = torch.nn.Linear(hidden, num_vertices * 3)
        self.register_buffer("steps", torch.tensor([7], dtype=torch.int64))

    @classmethod
    def from_config(cls, config: dict, topology: Topology) -> TinyNet:
        return cls(config["hidden"], topology.num_vertices)


def _save(tmp_path, half=False, name="m.safetensors"):
    torch.manual_seed(0)
    model = TinyNet(5, 4)
    path = save_checkpoint(tmp_path / name, model, config={"hidden": 5}, topology=tiny_topology(),
                           encoder={"kind": "whisper", "name_or_path": None, "layer": -1}, fps=30.0,
                           data_card={"dataset": "unit-test", "clips": np.int64(3)}, metrics={"lve_sq": 1e-5},
                           half=half)
    return model, path


def test_round_trip_and_build(tmp_path):
    model, path = _save(tmp_path)
    ck = load_checkpoint(path)
    assert ck.kind == "test_tiny" and ck.config == {"hidden": 5} and ck.fps == 30.0
    assert ck.data_card == {"dataset": "unit-test", "clips": 3} and ck.metrics == {"lve_sq": 1e-5}
    assert ck.encoder["kind"] == "whisper"
    assert ck.topology.fingerprint() == tiny_topology().fingerprint() and ck.topology.name == "tiny"
    assert ck.meta["topology"]["masks"] == ["face", "lips", "upper_face"]
    rebuilt = build_model(ck)
    assert not rebuilt.training
    for (k, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), k
    meta = read_metadata(path)
    assert meta["format_version"] == 1 and "created" in meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # atomic: no temp left


def test_half_precision(tmp_path):
    model, path = _save(tmp_path, half=True)
    full = _save(tmp_path, half=False, name="full.safetensors")[1]
    assert path.stat().st_size < full.stat().st_size
    ck = load_checkpoint(path)
    w = ck.state_dict["lin.weight"]
    assert w.dtype == torch.float32
    assert torch.allclose(w, model.lin.weight, atol=1e-3) and not torch.equal(w, model.lin.weight)
    assert ck.state_dict["steps"].dtype == torch.int64 and int(ck.state_dict["steps"]) == 7


def test_pickle_pt_refused(tmp_path):
    zip_pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, zip_pt)          # modern zip format
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)  # raw pickle
    for p in (zip_pt, legacy):
        with pytest.raises(CheckpointError, match="PyTorch pickle.*only loads .safetensors"):
            load_checkpoint(p)


def test_foreign_and_broken_files(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a Parley checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello world, not a model")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(junk)
    _, good = _save(tmp_path)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(CheckpointError):
        load_checkpoint(trunc)


def test_unknown_kind_and_unregistered_model(tmp_path):
    _, path = _save(tmp_path)
    ck = load_checkpoint(path)
    ck.kind = "does_not_exist"
    with pytest.raises(CheckpointError, match="unknown model kind 'does_not_exist'.*test_tiny"):
        build_model(ck)
    with pytest.raises(CheckpointError, match="not a registered model"):
        save_checkpoint(tmp_path / "x.safetensors", torch.nn.Linear(1, 1), config={}, topology=tiny_topology(),
                        encoder={}, fps=30, data_card={})
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "y.safetensors", TinyNet(5, 4), config={"bad": object()}, topology=tiny_topology(),
                        encoder={}, fps=30, data_card={})


def test_newer_format_refused(tmp_path):
    _, path = _save(tmp_path)
    ck = load_checkpoint(path)
    tensors = {f"model.{k}": v for k, v in ck.state_dict.items()}
    meta = dict(ck.meta, format_version=99)
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata={"parley": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="newer"):
        read_metadata(newer)


def test_shipped_checkpoints_by_name_and_alias(tmp_path, monkeypatch):
    """``--checkpoint NAME`` = engine/assets/NAME.safetensors; composite_regional aliases default; an
    unknown name lists the available ones; a path still works."""
    import engine.checkpoint as C

    monkeypatch.setattr(C, "ASSETS", tmp_path)
    _, default = _save(tmp_path, name="default.safetensors")
    _, other = _save(tmp_path, name="selftalk.safetensors")
    assert C.shipped_checkpoints() == {"composite_regional": default, "default": default, "selftalk": other}
    assert C.resolve_checkpoint_path("selftalk") == other
    assert C.resolve_checkpoint_path(None) == default and C.resolve_checkpoint_path("composite_regional") == default
    assert load_checkpoint("selftalk").kind == "test_tiny"
    with pytest.raises(CheckpointError, match=r"no shipped checkpoint named 'facefomer'; available: "
                                              r"composite_regional, default, selftalk"):
        C.resolve_checkpoint_path("facefomer")
    assert C.resolve_checkpoint_path(str(other)) == other          # explicit paths are taken as they are
    (tmp_path / "composite_regional.safetensors").write_bytes(default.read_bytes())
    assert C.shipped_checkpoints()["composite_regional"].name == "composite_regional.safetensors"  # own file wins


def test_old_composite_checkpoint_key_neutral_style_loads(tmp_path):
    """Checkpoints written before the model interface stored the buffer as ``neutral_style``."""
    from engine.models.composite_regional import CompositeRegionalModel
    topo = tiny_topology()
    m = CompositeRegionalModel.from_config({"feature_dim": 4, "channels": 8}, topo)
    sd = m.state_dict()
    sd["neutral_style"] = sd.pop("neutral_style_stats") + 3.0
    back = CompositeRegionalModel.from_config({"feature_dim": 4, "channels": 8}, topo)
    back.load_state_dict(sd, strict=True)
    torch.testing.assert_close(back.neutral_style(), sd["neutral_style"])
    assert back.config.adain_stats == "clip"   # a config without the key is an old, clip-statistics model

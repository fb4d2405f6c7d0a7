"""``python -m engine.bench`` (issue 14): table arithmetic, memory sampling, a tiny real run, and
the cold-start stage split.  Speed itself is never asserted (benchmarks print ratios)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import bench
from engine.bench_cold import STAGES

ROOT = Path(__file__).resolve().parents[1]


def test_speed_table_ratios_hand_computed():
    results = {"durations": [5.0], "methods": [
        {"name": "default", "window": "fitted", "rows": [
            {"seconds": 5.0, "encoder_s": 0.05, "decoder_s": 0.05, "e2e_s": 0.1, "peak_rss_mb": 500.0}]},
        {"name": "faceformer", "window": "full", "rows": [
            {"seconds": 5.0, "encoder_s": 0.3, "decoder_s": 0.5, "e2e_s": 0.8, "peak_rss_mb": 600.0}]},
        {"name": "broken", "error": "ValueError: x"}]}
    lines = bench.speed_table(results, "faceformer").splitlines()
    assert lines[2].split(" | ") == ["| default", "fitted", "5", "100×", "100×", "50×", "0.0200", "8.0×", "500 |"]
    assert lines[3].split(" | ")[3:8] == ["17×", "10×", "6.2×", "0.1600", "1.0×"]
    assert len(lines) == 4                      # the broken method has no speed row


def test_peak_rss_sees_an_allocation():
    with bench.PeakRSS() as base:
        pass
    with bench.PeakRSS() as mem:
        a = np.ones(300 * 2**20 // 8)          # 300 MB, touched
        del a
    assert mem.peak_mb - base.peak_mb > 200


def test_speechlike_is_deterministic_and_bounded():
    a, b = bench.speechlike(1.5), bench.speechlike(1.5)
    assert a.shape == (24000,) and a.dtype == np.float32 and np.array_equal(a, b)
    assert 0.01 < np.abs(a).max() < 1.0


@pytest.mark.slow
def test_bench_runs_a_tiny_case(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--durations", "1", "--only", "default", "--no-cold", "--threads", "1", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    (m,) = res["methods"]
    from engine.checkpoint import read_metadata

    declared = read_metadata("engine/assets/default.safetensors")["encoder"].get("window", "full")
    assert m["name"] == "default" and m["window"] == declared and m["load_s"] > 0
    speed, warm = m["rows"]
    assert speed["seconds"] == 1.0 and speed["frames"] == 30
    assert 0 < speed["encoder_s"] <= speed["e2e_s"] and speed["decoder_s"] > 0 and speed["peak_rss_mb"] > 100
    assert warm["seconds"] == bench.WARM_SECONDS and warm["warm_request_s"] > 0
    printed = capsys.readouterr().out
    assert f"| default | {declared} | 1 |" in printed and "warm 5 s request s" in printed


@pytest.mark.slow
def test_cold_stage_split_adds_up(tmp_path):
    from engine.bench_cold import cold_stages

    wav = bench._write_wav(tmp_path / "line.wav", 1.0)
    st = cold_stages(wav, "default", tmp_path, threads=1)
    assert set(STAGES) | {"interpreter", "total_wall", "total_cpu"} <= set(st)
    assert all(st[k] >= 0 for k in STAGES) and st["imports"] > 0 and st["encode"] > 0
    assert sum(st[k] for k in ("interpreter",) + STAGES) == pytest.approx(st["total_wall"], rel=1e-6)
    assert not list(tmp_path.glob("*.pc2"))    # the stage run's output was cleaned up


def test_bench_refuses_unknown_only(capsys):
    assert bench.main(["--only", "nope", "--no-cold"]) == 2
    assert "matches none" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("postprocess", ["none", "lipclose"])
def test_hour_row_runs_the_cli_and_cleans_up(tmp_path, postprocess):
    """The --hour row on 2 s: the CLI child really ran (CPU time, memory, the PC2's size: 60 frames
    of the default head) with the requested post-processing, and left no scratch files behind."""
    from engine.checkpoint import resolve_checkpoint_path

    r = bench.hour_row(str(resolve_checkpoint_path("default")), tmp_path, "cpu", seconds=2.0, postprocess=postprocess)
    with open("engine/assets/default_head.obj") as fh:
        v = sum(line.startswith("v ") for line in fh)
    assert r["postprocess"] == postprocess and r["audio_s"] == 2.0
    assert round(r["pc2_gb"] * 1e9) == 32 + 60 * v * 3 * 4
    assert r["wall_s"] > 0 and r["x_rt"] == pytest.approx(2.0 / r["wall_s"]) and r["cpu_s"] > 0.5
    assert 100 < r["peak_rss_mb"] < 4000
    assert not list(tmp_path.iterdir())

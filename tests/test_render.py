"""engine.render: rasteriser correctness on hand-made scenes, contact sheet, MP4 with audio."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from engine import render as R
from engine.render import (
    BACKGROUND,
    FFmpegNotFound,
    contact_sheet,
    render_frames,
    write_video,
)

BG = np.round(np.power(np.array(BACKGROUND), 1 / 1.1) * 255).astype(np.uint8)


def _quad(x0, x1, z0, z1, y):
    """Two triangles in the plane y = const facing -Y (toward the front camera)."""
    v = np.array([[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]], dtype=float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    return v, f


def test_single_quad_covers_the_expected_pixels():
    v, f = _quad(-1, 1, -1, 1, 0.0)
    # framing puts the 2x2 square into size*(1-2*0.06) pixels, centred
    img = render_frames(v[None], f, size=100, vertex_colors=np.ones((4, 3)))[0]
    lit = np.any(img != BG, axis=-1)
    # square spans pixels 6..93 (88 px): 100*0.06 = 6 from each border
    assert lit[50, 50] and lit[7, 7] and lit[92, 92]
    assert not lit[3, 50] and not lit[50, 96]
    assert abs(lit.sum() - 88 * 88) <= 2 * 88


def test_back_faces_are_culled():
    v, f = _quad(-1, 1, -1, 1, 0.0)
    img = render_frames(v[None], f[:, ::-1], size=32)[0]
    assert np.all(img == BG)


def test_zbuffer_nearest_surface_wins():
    front, f = _quad(-0.5, 0.5, -0.5, 0.5, -1.0)          # nearer (smaller y), red
    back, _ = _quad(-1, 1, -1, 1, 1.0)                    # farther, blue, larger
    v = np.concatenate([back, front])
    faces = np.concatenate([f, f + 4])
    col = np.array([[0, 0, 1]] * 4 + [[1, 0, 0]] * 4, dtype=float)
    for order in (faces, faces[::-1]):                   # independent of triangle order
        img = render_frames(v[None], order, size=64, vertex_colors=col)[0].astype(int)
        assert img[32, 32, 0] > img[32, 32, 2]            # centre: red quad in front
        assert img[6, 6, 2] > img[6, 6, 0]                # corner: only the blue quad


def test_views_and_shapes():
    from training.synthtalk.head import build_head

    h = build_head(10)
    frames = np.stack([h.vertices, h.vertices])
    a = render_frames(frames, h.topology, size=64)
    assert a.shape == (2, 64, 64, 3) and a.dtype == np.uint8
    assert np.any(a != BG, axis=-1).mean() > 0.3
    b = render_frames(frames, h.topology, size=64, view="three_quarter")
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5
    with pytest.raises(ValueError, match="view"):
        render_frames(frames, h.topology, view="top")
    with pytest.raises(ValueError, match="different topologies"):
        render_frames(frames[:, :100], h.faces)
    with pytest.raises(ValueError, match=r"\(T, V, 3\)"):
        render_frames(np.zeros((2, 5)), h.faces)


def test_open_mouth_shows_dark_interior():
    from training.synthtalk.head import build_head
    from training.synthtalk.rig import Rig

    h = build_head(10)
    X = Rig(h).pose({"jaw_open": np.array([0.0, 1.0])})
    img = render_frames(X, h.topology, size=128).astype(float)
    dark = (img.sum(-1) < 150).sum(axis=(1, 2))
    assert dark[1] > dark[0] + 30


@pytest.fixture(scope="module")
def talking():
    from training.synthtalk.head import build_head
    from training.synthtalk.rig import Rig

    h = build_head(10)
    T = 300
    t = np.arange(T) / 30.0
    X = Rig(h).pose({"jaw_open": 0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t),
                     "blink_l": (np.sin(2 * t) > 0.97).astype(float)})
    phones = [["sil", 0.0, 0.5], ["m", 0.5, 0.6], ["aa", 0.6, 0.9], ["p", 0.9, 1.0], ["uw", 1.0, 1.4],
              ["sil", 1.4, 10.0]]
    return h, X, phones


def test_contact_sheet(tmp_path, talking):
    h, X, phones = talking
    out = tmp_path / "sheet.png"
    contact_sheet(X[:60], h.topology, out, fps=30.0, phones=phones, title="test", n=12)
    import matplotlib.pyplot as plt

    img = plt.imread(out)
    assert img.shape[0] > 300 and img.shape[1] > 600
    # without a topology the gap curve needs explicit indices; a plain faces array still works
    contact_sheet(X[:10], h.faces, tmp_path / "plain.png", fps=30.0, n=4)
    assert (tmp_path / "plain.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".tmp_*"))


def test_missing_ffmpeg_gives_actionable_error(monkeypatch, tmp_path):
    import builtins

    monkeypatch.setattr(shutil, "which", lambda name: None)
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "imageio_ffmpeg":
            raise ImportError("no imageio_ffmpeg")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(FFmpegNotFound, match="apt-get install ffmpeg"):
        R.find_ffmpeg()


def _ffprobe_streams(path):
    probe = shutil.which("ffprobe")
    if probe is None:
        pytest.fail("ffprobe is not installed: run `make sysdeps` (apt package ffmpeg)")
    out = subprocess.run([probe, "-v", "error", "-show_entries", "stream=codec_type,nb_frames",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["streams"]


@pytest.mark.slow
def test_write_video_with_audio(tmp_path, talking):
    try:
        R.find_ffmpeg()
    except FFmpegNotFound:
        pytest.fail("no ffmpeg on this machine: run `make sysdeps` (apt package ffmpeg)")
    import soundfile as sf

    h, X, _ = talking
    wav = tmp_path / "a.wav"
    sr = 16000
    tt = np.arange(int(sr * 10.0)) / sr
    sf.write(wav, (0.2 * np.sin(2 * np.pi * 220 * tt)).astype(np.float32), sr)
    out = tmp_path / "clip.mp4"
    write_video(X, h.topology, out, fps=30.0, audio_wav=wav)
    streams = _ffprobe_streams(out)
    kinds = sorted(s["codec_type"] for s in streams)
    assert kinds == ["audio", "video"]
    video = next(s for s in streams if s["codec_type"] == "video")
    assert int(video["nb_frames"]) == 300
    assert not list(tmp_path.glob(".tmp_*"))
    with pytest.raises(FileNotFoundError):
        write_video(X[:3], h.topology, tmp_path / "x.mp4", fps=30.0, audio_wav=tmp_path / "nope.wav")
    assert not (tmp_path / "x.mp4").exists()


def test_three_quarter_view_shows_the_left_cheek():
    """Camera toward +X: a point at the front (-Y) moves to the image's left."""
    v, _f = _quad(-1, 1, -1, 1, 0.0)
    nose = np.array([[0.0, -1.0, 0.0]])
    rot = R._rotate_view(np.concatenate([v, nose])[None], "three_quarter")[0]
    assert rot[-1, 0] < -0.5                   # nose: screen x = -sin(35 deg)
    assert rot[-1, 1] == pytest.approx(-np.cos(np.deg2rad(35.0)))

"""``lipclose`` timed by the line's transcript (``python -m engine animate --transcript``): the
aligner (:mod:`engine.align`), the evidence it gives, the Animator option, and the CLI's handling
of good, unalignable and bad transcripts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import metrics as M
from engine.postprocess import phone_windows

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "engine" / "assets" / "sample.wav"
SAMPLE_META = json.loads((REPO / "engine" / "assets" / "sample.phones.json").read_text())


def _animate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "animate", *args], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_phone_windows_by_hand():
    """One window per /p b m/ over the mesh frames the phone overlaps (at least one), stress digits
    and case ignored, clipped to the clip; a phone past the end has none."""
    phones = [("sil", 0.0, 0.1), ("B", 0.1, 0.22), ("AA", 0.22, 0.4), ("m", 0.4, 0.48), ("B1", 0.501, 0.51),
              ("P", 0.58, 0.7), ("M", 0.9, 1.0)]
    assert phone_windows(phones, 30.0, 20) == [(3, 7), (12, 15), (15, 16), (17, 20)]
    assert phone_windows(phones, 30.0, 0) == []


def test_sink_takes_evidence_or_windows_not_both():
    from engine.postprocess import LipCloseSink

    masks = {"lip_upper_inner": [0], "lip_lower_inner": [1]}
    out = np.zeros((4, 2, 3), np.float32)
    with pytest.raises(ValueError, match="exactly one"):
        LipCloseSink(out, None, 30.0, np.zeros((2, 3)), masks)
    with pytest.raises(ValueError, match="exactly one"):
        LipCloseSink(out, np.zeros(6), 30.0, np.zeros((2, 3)), masks, windows=[(0, 1)])


def test_unknown_words_and_alignment_of_the_sample():
    """The aligner's dictionary check names the words it cannot pronounce; the sample's transcript
    aligns to the same bilabials as the phone file shipped with it."""
    from engine.align import AlignmentError, align, unknown_words
    from engine.audio import load_audio

    assert unknown_words("Zorblax met Bob, zorblax!") == ["zorblax"]
    assert unknown_words("Bring me the map") == []
    wav = load_audio(str(SAMPLE))
    with pytest.raises(AlignmentError, match="zorblax"):
        align(wav, "Bring me the zorblax")
    phones, words = align(wav, SAMPLE_META["text"])
    assert [w[0] for w in words][:4] == ["bring", "me", "the", "map"]
    got = [(p, round(s, 2)) for p, s, _ in phones if p in ("P", "B", "M")]
    want = [(p, round(s, 2)) for p, s, _ in SAMPLE_META["phones"] if p in ("P", "B", "M")]
    assert len(got) == len(want) == 9
    assert all(a[0] == b[0] and abs(a[1] - b[1]) <= 0.03 for a, b in zip(got, want)), (got, want)


@pytest.mark.slow
def test_animator_closes_every_transcript_bilabial_of_the_sample():
    """With the transcript the lips meet on all nine /p b m/ of the sample, including the /m/ at
    1.8 s that the recogniser does not report (README demo picture); a timed phone list gives the
    same frames as the text it was aligned from; a transcript without lipclose is refused."""
    from engine.align import align
    from engine.audio import load_audio
    from engine.inference import Animator

    anim = Animator.from_checkpoint("default", device="cpu")
    wav = load_audio(str(SAMPLE))
    masks = anim.topology.masks
    up, lo = masks["lip_upper_inner"], masks["lip_lower_inner"]
    thr = M.default_closure_threshold(anim.model.template.detach().float().numpy(), masks["face"])
    bil = [(s, e) for p, s, e in align(wav, SAMPLE_META["text"])[0] if p in ("P", "B", "M")]

    def closed(frames: np.ndarray) -> list[bool]:
        gap = M.inner_lip_gap(frames, up, lo)
        return [bool((gap[int(s * anim.fps):max(int(s * anim.fps) + 1, int(np.ceil(e * anim.fps)))] < thr).any())
                for s, e in bil]

    by_text = anim.animate(wav, postprocess="lipclose", transcript=SAMPLE_META["text"])
    by_ear = anim.animate(wav, postprocess="lipclose")
    assert all(closed(by_text)), closed(by_text)
    assert not all(closed(by_ear)), "the recogniser's evidence is expected to miss one here"
    phones = align(wav, SAMPLE_META["text"])[0]
    np.testing.assert_array_equal(anim.animate(wav, postprocess="lipclose", transcript=phones), by_text)
    with pytest.raises(ValueError, match="only used by postprocess 'lipclose'"):
        anim.animate(wav, transcript=SAMPLE_META["text"])


def test_cli_transcript_good_unalignable_and_bad(tmp_path):
    """A transcript file is used; one with a word outside the dictionary still animates, with a
    warning (a JSON event for the add-on); a missing or empty file, or a transcript with
    ``--postprocess none``, is an error before anything is written."""
    good, odd, empty = tmp_path / "good.txt", tmp_path / "odd.txt", tmp_path / "empty.txt"
    good.write_text(SAMPLE_META["text"] + "\n", encoding="utf-8")
    odd.write_text("Bring me the zorblax, please.", encoding="utf-8")
    empty.write_text("  \n", encoding="utf-8")
    base = ("--audio", str(SAMPLE), "--device", "cpu")

    r = _animate(*base, "--transcript", str(good), "--out", str(tmp_path / "good.npy"), "--progress", "none")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert np.load(tmp_path / "good.npy").shape[0] == 129

    r = _animate(*base, "--transcript", str(odd), "--out", str(tmp_path / "odd.npy"), "--progress", "json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "zorblax" in warnings[0] and "transcript not used" in warnings[0]
    assert events[-1]["event"] == "done" and (tmp_path / "odd.npy").is_file()

    for args, message in (((str(tmp_path / "missing.txt"),), "no such file"), ((str(empty),), "is empty"),
                          ((str(good), "--postprocess", "none"), "no use with --postprocess none")):
        out = tmp_path / "never.npy"
        r = _animate(*base, "--transcript", *args, "--out", str(out), "--progress", "none")
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert not out.exists() and not list(tmp_path.glob("*.tmp*"))

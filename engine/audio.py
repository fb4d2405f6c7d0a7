"""Audio input: any file soundfile can read (or a numpy array) -> mono float32 at 16 kHz.

Every speech encoder Parley uses expects 16 kHz mono, and every model maps audio length to
mesh frames with :func:`num_frames`, so this is the single entry point for audio in the
engine, the training code and the Blender add-on.

Design notes
* Reading uses ``soundfile`` (libsndfile) and resampling ``scipy.signal.resample_poly``
  with gcd-reduced factors; no torchaudio (it pins another torch).
* All processing stays in float32 and statistics are computed in blocks, so an hour of
  audio costs about the size of the array itself, not several float64 copies.
* Loudness normalisation scales the clip to a fixed RMS level (capped so peaks stay below
  full scale). Near-silent input is returned unscaled: silence is valid input (a model
  should produce a neutral face), and amplifying a noise floor by 80 dB would not be.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

__all__ = ["SAMPLE_RATE", "SUPPORTED_FORMATS", "AudioError", "load_audio", "normalize_loudness", "num_frames", "resample_to_16k"]

SAMPLE_RATE = 16000
TARGET_RMS = 0.1          # -20 dBFS: typical level of speech corpora
PEAK_LIMIT = 0.99
SILENCE_RMS = 1e-4        # below -80 dBFS the clip is treated as silence and left alone
_BLOCK = 1 << 20          # samples per block for streaming statistics
SUPPORTED_FORMATS = "WAV, FLAC or OGG (Vorbis/Opus), 8/16/24/32-bit integer or float, mono or stereo, any sample rate"


class AudioError(ValueError):
    """Audio that cannot be used, with a message saying what is wrong and what to do."""


def num_frames(num_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of mesh frames for ``num_samples`` of audio: ``max(1, round(samples*fps/rate))``.

    Everyone (datasets, models, exporters, the add-on) uses this one rule so clip lengths agree.
    """
    return max(1, int(round(num_samples * float(fps) / float(sample_rate))))  # noqa: RUF046 - numpy floats


def _name(source: object) -> str:
    return str(source) if not isinstance(source, np.ndarray) else "<numpy array>"


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises LibsndfileError/RuntimeError/TypeError
        raise AudioError(
            f"cannot read audio file {path}: {exc}. Parley reads {SUPPORTED_FORMATS}; "
            "convert other files first, e.g. `ffmpeg -i input.mp4 -ac 1 -ar 16000 out.wav`."
        ) from None
    return data, int(rate)


def _int_to_float(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:  # 8-bit PCM is unsigned
        return (x.astype(np.float32) - 128.0) / 128.0
    info = np.iinfo(x.dtype)
    return x.astype(np.float32) / float(-info.min)


def _from_array(x: np.ndarray) -> np.ndarray:
    """(S,), (S, C) or (C, S) with C <= 8 -> (S, C) float32."""
    if x.ndim == 1:
        x = x[:, None]
    elif x.ndim == 2:
        if x.shape[0] <= 8 < x.shape[1]:  # channels-first (torchaudio/librosa style)
            x = x.T
    else:
        raise AudioError(f"audio array must be 1-D (samples,) or 2-D (samples, channels); got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        return _int_to_float(x)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    if x.dtype == np.bool_:
        raise AudioError("audio array has dtype bool; pass samples as float or integer PCM")
    raise AudioError(f"audio array has unsupported dtype {x.dtype}; pass float or integer PCM samples")


def _check_finite(x: np.ndarray, name: str) -> None:
    for start in range(0, len(x), _BLOCK):
        block = x[start:start + _BLOCK]
        if not np.isfinite(block).all():
            bad = start + int(np.argmin(np.isfinite(block).all(axis=-1) if block.ndim > 1 else np.isfinite(block)))
            raise AudioError(
                f"{name} contains NaN or infinite samples (first at sample {bad}); "
                "the file is damaged or was produced by a failing process - re-export it."
            )


def _rms_and_peak(x: np.ndarray) -> tuple[float, float]:
    total = 0.0
    peak = 0.0
    for start in range(0, len(x), _BLOCK):
        block = x[start:start + _BLOCK].astype(np.float64)
        total += float(np.dot(block, block))
        if len(block):
            peak = max(peak, float(np.abs(block).max()))
    return math.sqrt(total / max(1, len(x))), peak


def resample_to_16k(mono: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 audio at ``rate`` -> 16 kHz with ``resample_poly`` (exact gcd-reduced
    up/down factors; returned unchanged when already at 16 kHz)."""
    if rate == SAMPLE_RATE:
        return mono
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), SAMPLE_RATE)
    return resample_poly(mono, SAMPLE_RATE // g, int(rate) // g).astype(np.float32, copy=False)


def normalize_loudness(x: np.ndarray, target_rms: float = TARGET_RMS, peak_limit: float = PEAK_LIMIT) -> np.ndarray:
    """Scale ``x`` (in place if float32) to ``target_rms``, never pushing a peak above ``peak_limit``.

    Silence (RMS below -80 dBFS) is returned unchanged: no divide-by-zero, no noise boost.
    """
    rms, peak = _rms_and_peak(x)
    if rms < SILENCE_RMS or peak == 0.0:
        return x
    gain = min(target_rms / rms, peak_limit / peak)
    x *= np.float32(gain)
    return x


def load_audio(source: str | os.PathLike | np.ndarray, sample_rate: int | None = None,
               normalize: bool = True, min_seconds: float = 0.1) -> np.ndarray:
    """Load audio as mono float32 at :data:`SAMPLE_RATE` (16 kHz).

    ``source`` is a path to any file libsndfile reads, or a numpy array of samples (then
    ``sample_rate`` is required: guessing it would silently produce wrong lip timing).
    For files, the file's own rate is used and ``sample_rate`` is ignored. Multichannel
    audio is averaged to mono. Raises :class:`AudioError` for missing/empty/corrupt files,
    NaN/Inf samples and clips shorter than ``min_seconds``.
    """
    name = _name(source)
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise AudioError("audio given as a numpy array needs sample_rate= (e.g. load_audio(x, sample_rate=44100))")
        original = source
        data = _from_array(source)
        rate = int(sample_rate)
    elif isinstance(source, (str, os.PathLike)):
        original = None
        data, rate = _read_file(Path(source))
    else:
        raise AudioError(f"expected a file path or numpy array for audio, got {type(source).__name__}")
    if rate <= 0:
        raise AudioError(f"{name}: invalid sample rate {rate}")
    if data.shape[0] == 0:
        raise AudioError(f"{name} contains no audio samples (empty); record or export at least {min_seconds:g} s")
    _check_finite(data, name)

    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    del data
    mono = np.ascontiguousarray(resample_to_16k(mono, rate), dtype=np.float32)
    if original is not None and np.shares_memory(mono, original):
        mono = mono.copy()  # never modify the caller's array in place

    seconds = len(mono) / SAMPLE_RATE
    if seconds < min_seconds:
        raise AudioError(
            f"{name} is too short: {seconds:.3f} s of audio, at least {min_seconds:g} s are needed"
        )
    if normalize:
        mono = normalize_loudness(mono)
    return mono

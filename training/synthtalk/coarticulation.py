"""Timed phones -> rig control curves: visemes, Cohen-Massaro dominance blending, style, and
speech-independent motion (blinks, brow raises, small drifts).

Model (Cohen & Massaro 1993, "Modeling coarticulation in synthetic visual speech"): every phone
segment ``i`` has a target value ``T_ik`` for each control ``k`` and a dominance function
``D_ik(t) = a_ik * exp(-theta * tau^c)``, where ``tau`` is the time from ``t`` to the segment's
core (zero inside it) and ``theta`` is the anticipatory rate before the core and the carry-over
rate after it. The control curve is the dominance-weighted mean of the targets,
``F_k(t) = sum_i D_ik T_ik / sum_i D_ik``. Low-dominance phones (t, d, n, h) thereby take their lip
shape from their neighbours (the lips round through "stew"), while bilabials, labiodentals and
open vowels impose theirs.

Dominance blending alone lets fast speech undershoot: two vowels around a 50 ms /b/ pull the
lips apart. Real bilabials always seal, so after blending we enforce hard constraints at each
/p b m/ (lips_close >= 0.95 with jaw <= 0.35 at the phone's midpoint frame and around it), at each
/f v/ (lower-lip tuck) and, more softly, a minimum jaw opening on open vowels and rounding on
rounded vowels. These are what the corpus tests check.

Frame ``f`` represents time ``f / fps`` (the convention of ``engine.metrics.bilabial_frames``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "CONTROLS",
    "PHONE_VISEME",
    "VISEMES",
    "VISEME_TARGETS",
    "SpeakerStyle",
    "animate_controls",
    "phone_viseme",
    "speech_controls",
    "style_for_subject",
]

CONTROLS = ["jaw_open", "lips_close", "lips_press", "pucker", "funnel", "stretch", "lower_lip_tuck",
            "upper_lip_raise", "smile", "brow_raise", "brow_furrow", "blink_l", "blink_r"]
C = {name: i for i, name in enumerate(CONTROLS)}
SPEECH = ["jaw_open", "lips_close", "lips_press", "pucker", "funnel", "stretch", "lower_lip_tuck",
          "upper_lip_raise", "smile"]
LIP = [c for c in SPEECH if c != "jaw_open"]

VISEMES = ["sil", "PBM", "FV", "TH", "TD", "KG", "CH", "SZ", "NL", "R",
           "OPEN", "MID", "CLOSE_FRONT", "ROUNDED", "NEUTRAL"]

PHONE_VISEME = {
    "P": "PBM", "B": "PBM", "M": "PBM", "F": "FV", "V": "FV", "TH": "TH", "DH": "TH",
    "T": "TD", "D": "TD", "K": "KG", "G": "KG", "NG": "KG", "CH": "CH", "JH": "CH", "SH": "CH",
    "ZH": "CH", "S": "SZ", "Z": "SZ", "N": "NL", "L": "NL", "R": "R", "HH": "NEUTRAL",
    "AA": "OPEN", "AE": "OPEN", "AH": "OPEN", "AY": "OPEN", "AW": "OPEN", "AO": "ROUNDED",
    "EH": "MID", "EY": "MID", "ER": "MID", "IY": "CLOSE_FRONT", "IH": "CLOSE_FRONT", "Y": "CLOSE_FRONT",
    "OW": "ROUNDED", "UW": "ROUNDED", "UH": "ROUNDED", "OY": "ROUNDED", "W": "ROUNDED", "sil": "sil",
}

# Targets per viseme, for the SPEECH controls (others stay 0). Values chosen by looking at the rig.
VISEME_TARGETS: dict[str, dict[str, float]] = {
    "sil": {"jaw_open": 0.03, "lips_close": 0.35},
    "PBM": {"jaw_open": 0.08, "lips_close": 1.0, "lips_press": 0.45},
    "FV": {"jaw_open": 0.14, "lower_lip_tuck": 1.0, "upper_lip_raise": 0.25},
    "TH": {"jaw_open": 0.2, "stretch": 0.15, "upper_lip_raise": 0.15},
    "TD": {"jaw_open": 0.2, "stretch": 0.15},
    "KG": {"jaw_open": 0.3, "stretch": 0.1},
    "CH": {"jaw_open": 0.15, "funnel": 0.85, "pucker": 0.35, "upper_lip_raise": 0.2},
    "SZ": {"jaw_open": 0.08, "stretch": 0.5, "smile": 0.1},
    "NL": {"jaw_open": 0.22, "stretch": 0.1},
    "R": {"jaw_open": 0.15, "funnel": 0.45, "pucker": 0.45},
    "OPEN": {"jaw_open": 0.72, "stretch": 0.1},
    "MID": {"jaw_open": 0.45, "stretch": 0.3},
    "CLOSE_FRONT": {"jaw_open": 0.18, "stretch": 0.6, "smile": 0.15},
    "ROUNDED": {"jaw_open": 0.28, "pucker": 0.85, "funnel": 0.5},
    "NEUTRAL": {"jaw_open": 0.3},
}
# Per-phone adjustments on top of the viseme target.
PHONE_OVERRIDES: dict[str, dict[str, float]] = {
    "AH": {"jaw_open": 0.45}, "AO": {"jaw_open": 0.55, "pucker": 0.55, "funnel": 0.6}, "ER": {"jaw_open": 0.3, "funnel": 0.35, "pucker": 0.25},
    "M": {"lips_press": 0.2}, "P": {"lips_press": 0.6}, "W": {"jaw_open": 0.12, "pucker": 1.0, "funnel": 0.3},
    "UW": {"jaw_open": 0.18, "pucker": 1.0}, "IH": {"jaw_open": 0.25, "stretch": 0.45}, "AE": {"jaw_open": 0.68, "stretch": 0.35},
}
# Diphthongs: (first part, second part, fraction of the duration in the first part)
DIPHTHONGS = {"AY": ("AA", "IY", 0.55), "AW": ("AA", "UW", 0.55), "OY": ("AO", "IY", 0.5),
              "EY": ("EH", "IY", 0.6), "OW": ("AO", "UW", 0.45)}

# Dominance: (lip magnitude, jaw magnitude, anticipatory rate 1/s, carry-over rate 1/s)
DOMINANCE: dict[str, tuple[float, float, float, float]] = {
    "sil": (0.25, 0.3, 10.0, 14.0),
    "PBM": (1.0, 0.6, 25.0, 30.0),
    "FV": (0.9, 0.5, 25.0, 30.0),
    "TH": (0.35, 0.4, 30.0, 35.0),
    "TD": (0.15, 0.35, 35.0, 40.0),
    "KG": (0.15, 0.35, 35.0, 40.0),
    "CH": (0.7, 0.4, 20.0, 28.0),
    "SZ": (0.45, 0.45, 25.0, 30.0),
    "NL": (0.12, 0.3, 35.0, 40.0),
    "R": (0.5, 0.35, 22.0, 28.0),
    "OPEN": (0.45, 0.9, 20.0, 22.0),
    "MID": (0.45, 0.8, 20.0, 22.0),
    "CLOSE_FRONT": (0.5, 0.75, 20.0, 22.0),
    "ROUNDED": (0.75, 0.75, 12.0, 20.0),   # rounding anticipates early (Benguerel & Cowan)
    "NEUTRAL": (0.03, 0.05, 40.0, 40.0),
}

BILABIAL = {"P", "B", "M"}
LABIODENTAL = {"F", "V"}
OPEN_VOWELS = {"AA", "AE"}
ROUND_VOWELS = {"UW", "OW", "UH", "OY", "W"}


def phone_viseme(label: str) -> str:
    """Viseme class of an ARPAbet phone (stress digits allowed); unknown labels are an error."""
    lab = str(label).strip().rstrip("012")
    lab = "sil" if lab.lower() in ("sil", "sp", "spn", "pau", "") else lab.upper()
    if lab not in PHONE_VISEME:
        raise ValueError(f"unknown phone {label!r}; expected ARPAbet (CMU 39) without stress or 'sil'")
    return PHONE_VISEME[lab]


@dataclass(frozen=True)
class SpeakerStyle:
    """Per-speaker (per-subject) articulation style and upper-face behaviour.

    articulation scales lip deformations; jaw_scale the jaw; rounding the pucker/funnel of rounded
    sounds; smile_bias a resting smile; blink_rate blinks per minute; brow_activity how often and how
    strongly brows rise on stressed syllables; tempo_sharpness scales the dominance rates (crisper vs
    more coarticulated speech).
    """

    articulation: float = 1.0
    jaw_scale: float = 1.0
    rounding: float = 1.0
    smile_bias: float = 0.0
    blink_rate: float = 17.0
    brow_activity: float = 0.5
    tempo_sharpness: float = 1.0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> SpeakerStyle:
        return cls(
            articulation=round(float(rng.uniform(0.75, 1.2)), 4),
            jaw_scale=round(float(rng.uniform(0.7, 1.3)), 4),
            rounding=round(float(rng.uniform(0.6, 1.3)), 4),
            smile_bias=round(float(rng.uniform(0.0, 0.25)), 4),
            blink_rate=round(float(rng.uniform(10.0, 28.0)), 3),
            brow_activity=round(float(rng.uniform(0.15, 1.0)), 4),
            tempo_sharpness=round(float(rng.uniform(0.8, 1.25)), 4),
        )

    @classmethod
    def neutral(cls) -> SpeakerStyle:
        return cls()

    def to_dict(self) -> dict:
        return asdict(self)


def style_for_subject(index: int, seed: int = 0) -> SpeakerStyle:
    """The fixed style of subject ``index`` (deterministic in ``seed``)."""
    return SpeakerStyle.sample(np.random.default_rng([int(seed), 7919, int(index)]))


# ----------------------------------------------------------------------------- speech
def _segments(phones) -> list[tuple[str, str, float, float]]:
    """(phone, viseme, start, end) with diphthongs split into their two parts."""
    out = []
    for p in phones:
        lab, s, e = str(p[0]), float(p[1]), float(p[2])
        if e < s:
            raise ValueError(f"phone {p!r} ends before it starts")
        vis = phone_viseme(lab)
        base = lab.strip().rstrip("012").upper() if vis != "sil" else "sil"
        if base in DIPHTHONGS and e - s > 0.06:
            a, b, frac = DIPHTHONGS[base]
            m = s + frac * (e - s)
            out.append((a, phone_viseme(a), s, m))
            out.append((b, phone_viseme(b), m, e))
        else:
            out.append((base, vis, s, e))
    return out


def _target(phone: str, vis: str) -> np.ndarray:
    t = np.zeros(len(SPEECH))
    for k, v in {**VISEME_TARGETS[vis], **PHONE_OVERRIDES.get(phone, {})}.items():
        t[SPEECH.index(k)] = v
    return t


def speech_controls(phones, times: np.ndarray, style: SpeakerStyle) -> np.ndarray:
    """Dominance-blended speech controls at ``times`` -> (T, len(SPEECH)), before constraints."""
    segs = _segments(phones)
    if not segs:
        out = np.zeros((len(times), len(SPEECH)))
        out[:, :] = _target("sil", "sil")
        return out
    targets = np.stack([_target(p, v) for p, v, _, _ in segs])              # (N, K)
    s = np.array([x[2] for x in segs]); e = np.array([x[3] for x in segs])
    d = e - s
    core_s, core_e = s + 0.25 * d, e - 0.25 * d
    dom = np.array([DOMINANCE[v] for _, v, _, _ in segs])                    # (N, 4)
    sharp = style.tempo_sharpness
    t = times[None, :]
    before = np.clip(core_s[:, None] - t, 0, None)
    after = np.clip(t - core_e[:, None], 0, None)
    shape = np.exp(-(dom[:, 2:3] * sharp) * before - (dom[:, 3:4] * sharp) * after)  # (N, T), c = 1
    jaw_i = SPEECH.index("jaw_open")
    mag = np.repeat(dom[:, 0:1], len(SPEECH), axis=1)
    mag[:, jaw_i] = dom[:, 1]
    D = shape[:, :, None] * mag[:, None, :] + 1e-12                          # (N, T, K)
    F = (D * targets[:, None, :]).sum(0) / D.sum(0)                          # (T, K)
    # style
    F[:, jaw_i] *= style.jaw_scale
    for k in ("lips_press", "stretch", "upper_lip_raise", "lower_lip_tuck"):
        F[:, SPEECH.index(k)] *= style.articulation
    for k in ("pucker", "funnel"):
        F[:, SPEECH.index(k)] *= style.articulation * style.rounding
    F[:, SPEECH.index("smile")] += style.smile_bias
    return F


def _window(times: np.ndarray, mid: float, half: float, ramp: float) -> np.ndarray:
    """1 within ``half`` of ``mid``, raised-cosine down to 0 over ``ramp`` beyond it."""
    dist = np.abs(times - mid) - half
    w = np.where(dist <= 0, 1.0, 0.5 * (1 + np.cos(np.pi * np.clip(dist / ramp, 0, 1))))
    return np.where(dist >= ramp, 0.0, w)


def _enforce(F: np.ndarray, phones, times: np.ndarray, fps: float, style: SpeakerStyle) -> np.ndarray:
    idx = {k: i for i, k in enumerate(CONTROLS)}
    frame = 1.0 / fps
    rank = {**{k: 0 for k in OPEN_VOWELS | ROUND_VOWELS}, **{k: 1 for k in LABIODENTAL}, **{k: 2 for k in BILABIAL}}
    # vowels first, then f/v, bilabials last: where constraints of neighbours overlap, closure wins
    ordered = sorted((p for p in phones if str(p[0]).strip().rstrip("012").upper() in rank),
                     key=lambda p: rank[str(p[0]).strip().rstrip("012").upper()])
    for p in ordered:
        lab = str(p[0]).strip().rstrip("012").upper()
        s, e = float(p[1]), float(p[2])
        mid, dur = 0.5 * (s + e), e - s
        if lab in BILABIAL:
            g = _window(times, mid, max(0.5 * dur, 0.55 * frame), 0.06)
            lc = F[:, idx["lips_close"]]
            F[:, idx["lips_close"]] = lc + g * np.clip(0.98 - lc, 0, None)
            jaw = F[:, idx["jaw_open"]]
            F[:, idx["jaw_open"]] = jaw - g * np.clip(jaw - 0.3, 0, None)
            for k in ("lower_lip_tuck", "upper_lip_raise", "funnel"):
                F[:, idx[k]] *= 1 - g
            press = F[:, idx["lips_press"]]
            F[:, idx["lips_press"]] = press + g * np.clip(0.3 * style.articulation - press, 0, None)
        elif lab in LABIODENTAL:
            g = _window(times, mid, max(0.5 * dur, 0.55 * frame), 0.05)
            tuck = F[:, idx["lower_lip_tuck"]]
            F[:, idx["lower_lip_tuck"]] = tuck + g * np.clip(0.9 - tuck, 0, None)
            jaw = F[:, idx["jaw_open"]]
            F[:, idx["jaw_open"]] = jaw - g * np.clip(jaw - 0.3, 0, None)
            F[:, idx["lips_close"]] *= 1 - g
        elif lab in OPEN_VOWELS and dur > 0.05:
            g = _window(times, mid, 0.3 * dur, 0.05)
            jaw = F[:, idx["jaw_open"]]
            floor = 0.42 * style.jaw_scale
            F[:, idx["jaw_open"]] = jaw + g * np.clip(floor - jaw, 0, None)
            F[:, idx["lips_close"]] *= 1 - g
        elif lab in ROUND_VOWELS and dur > 0.05:
            g = _window(times, mid, 0.3 * dur, 0.05)
            pk = F[:, idx["pucker"]]
            floor = 0.55 * style.rounding
            F[:, idx["pucker"]] = pk + g * np.clip(floor - pk, 0, None)
    return F


# ----------------------------------------------------------------------------- upper face
def _smooth_noise(rng: np.random.Generator, n: int, fps: float, sigma_s: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    x = rng.standard_normal(n + 64)
    y = gaussian_filter1d(x, sigma=max(sigma_s * fps, 0.5), mode="wrap")[32:32 + n]
    return y / (np.std(y) + 1e-9)


def _blinks(times: np.ndarray, rng: np.random.Generator, rate_per_min: float) -> tuple[np.ndarray, np.ndarray, list]:
    """Poisson blinks (>= 0.8 s apart), each: 70 ms closing, 30 ms closed, 120 ms opening."""
    dur = float(times[-1]) + 1.0 / 30 if len(times) else 0.0
    left = np.zeros(len(times)); right = np.zeros(len(times)); events = []
    t = float(rng.uniform(0.1, 1.5))
    mean_gap = 60.0 / max(rate_per_min, 1e-3)
    while t < dur:
        amp = float(rng.uniform(0.85, 1.0))
        lag = float(rng.uniform(0.0, 0.01))
        for arr, t0, a in ((left, t, amp), (right, t + lag, amp * float(rng.uniform(0.95, 1.0)))):
            x = times - t0
            close = np.clip(x / 0.07, 0, 1)
            open_ = np.clip((x - 0.10) / 0.12, 0, 1)
            shape = np.where(x < 0, 0.0, np.where(x < 0.10, np.sin(0.5 * np.pi * close), np.cos(0.5 * np.pi * open_)))
            arr[:] = np.maximum(arr, a * np.clip(shape, 0, 1))
        events.append(round(t, 3))
        t += max(0.8, float(rng.exponential(mean_gap)))
    return left, right, events


def _energy_peaks(audio: np.ndarray, sr: int = 16000) -> list[float]:
    """Times of prominent loudness peaks (a cheap proxy for stressed syllables / pitch accents)."""
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import find_peaks

    hop = sr // 100
    n = len(audio) // hop
    if n < 10:
        return []
    env = np.sqrt(np.mean(np.square(audio[: n * hop].reshape(n, hop).astype(np.float64)), axis=1))
    env = uniform_filter1d(env, 15)
    db = 20 * np.log10(env + 1e-6)
    peaks, _ = find_peaks(db, prominence=4.0, distance=40)
    return [float(p) / 100.0 for p in peaks]


def _stress_proxies(phones) -> list[float]:
    """Without audio: midpoints of long vowels (stressed vowels are longer)."""
    from .text import VOWELS

    out = []
    for p in phones:
        lab = str(p[0]).upper().rstrip("012")
        if lab in VOWELS and float(p[2]) - float(p[1]) > 0.11:
            out.append(0.5 * (float(p[1]) + float(p[2])))
    return out


def _bump(times: np.ndarray, t0: float, rise: float, hold: float, fall: float) -> np.ndarray:
    x = times - t0
    up = 0.5 - 0.5 * np.cos(np.pi * np.clip(x / rise, 0, 1))
    down = 0.5 + 0.5 * np.cos(np.pi * np.clip((x - rise - hold) / fall, 0, 1))
    return np.where(x < rise + hold, up, down) * (x >= 0)


def animate_controls(phones, num_frames: int, fps: float, style: SpeakerStyle,
                     rng: np.random.Generator, audio: np.ndarray | None = None,
                     return_events: bool = False):
    """Rig control curves (num_frames, len(CONTROLS)) in [0, 1] for a timed phone sequence.

    ``audio`` (16 kHz) places brow raises on loudness peaks; without it long vowels are used.
    ``rng`` drives blinks, brows and drift, so the same rng state gives the same curves.
    With ``return_events`` also returns a dict of blink/brow event times (for metadata).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    times = np.arange(num_frames) / float(fps)
    out = np.zeros((num_frames, len(CONTROLS)))
    sp = speech_controls(phones, times, style)
    for j, k in enumerate(SPEECH):
        out[:, C[k]] = sp[:, j]
    # small slow drifts (before constraints, so they can never open a closure)
    out[:, C["jaw_open"]] += 0.015 * _smooth_noise(rng, num_frames, fps, 0.25)
    out[:, C["smile"]] += 0.02 * _smooth_noise(rng, num_frames, fps, 0.6)
    out = _enforce(out, phones, times, fps, style)
    # upper face
    left, right, blinks = _blinks(times, rng, style.blink_rate)
    out[:, C["blink_l"]] = left
    out[:, C["blink_r"]] = right
    cands = _energy_peaks(np.asarray(audio, dtype=np.float32).reshape(-1)) if audio is not None else _stress_proxies(phones)
    brows = []
    brow = 0.03 * np.abs(_smooth_noise(rng, num_frames, fps, 0.5)) * style.brow_activity
    for t0 in cands:
        if rng.random() < 0.35 + 0.5 * style.brow_activity:
            amp = float(rng.uniform(0.2, 0.6)) * (0.4 + 0.6 * style.brow_activity)
            b = _bump(times, t0 - 0.1, 0.12, float(rng.uniform(0.1, 0.25)), 0.3)
            brow = np.maximum(brow, amp * b)
            brows.append(round(t0, 3))
    out[:, C["brow_raise"]] = brow
    furrow = np.zeros(num_frames)
    if rng.random() < 0.3:
        t0 = float(rng.uniform(0, max(times[-1], 1e-3)))
        furrow = float(rng.uniform(0.1, 0.35)) * _bump(times, t0, 0.3, 0.4, 0.5)
    out[:, C["brow_furrow"]] = furrow
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if return_events:
        return out, {"blinks": blinks, "brow_raises": brows}
    return out

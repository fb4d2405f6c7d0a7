"""Whisper encoder weights that load fast: converted once, then memory-mapped safetensors.

The offline Whisper tiny.en ships as one CTranslate2 ``model.bin`` (75 MB, float16, encoder
*and* decoder).  Parsing it, splitting the fused q/k/v matrices and widening to float32 costs
about a second on every start, almost all of it for the decoder we never run.  So the first
start converts the **encoder only** into ``<cache>/whisper-encoder-<key>.safetensors`` (float32,
≈ 33 MB, atomic write) and every later start memory-maps that file (a few ms).

``<cache>`` is ``$PARLEY_CACHE_DIR``, else ``$XDG_CACHE_HOME/parley``, else ``~/.cache/parley``.
``<key>`` hashes the source file's resolved path, size and modification time, so a reinstalled
or different model is converted again instead of silently reusing stale weights.  If the cache
folder is not writable the converted weights are simply used from memory (slower starts, same
numbers): float16 -> float32 is exact, so cached and freshly converted weights are bit-identical.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

from torch import Tensor

from . import EncoderError
from .whisper_net import WhisperEncoderDims

__all__ = ["cache_root", "encoder_cache_path", "encoder_dims_from_ct2", "load_encoder_weights"]

FORMAT = "parley-whisper-encoder-1"
_LOCK = threading.Lock()
_MEMO: dict[str, tuple[WhisperEncoderDims, dict[str, Tensor]]] = {}


def cache_root() -> Path:
    """Folder for converted weights (see the module docstring for the order of lookups)."""
    env = os.environ.get("PARLEY_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "parley"


def encoder_cache_path(model_dir: Path) -> Path:
    src = (Path(model_dir) / "model.bin").resolve()
    st = src.stat()
    key = hashlib.sha256(f"{FORMAT}|{src}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / f"whisper-encoder-{key}.safetensors"


def encoder_dims_from_ct2(ct2) -> WhisperEncoderDims:
    """Encoder shapes read off the CTranslate2 arrays (any Whisper size, no transformers)."""
    v = ct2.variables
    if not ct2.spec_name.startswith("Whisper"):
        raise EncoderError(f"CTranslate2 model is a {ct2.spec_name}, not a Whisper model")
    n = 0
    while f"encoder/layer_{n}/ffn/linear_0/weight" in v:
        n += 1
    d_model, n_mels, _ = v["encoder/conv1/weight"].shape
    return WhisperEncoderDims(n_mels=int(n_mels), d_model=int(d_model), n_layers=n,
                              n_heads=int(v["encoder/num_heads"]),
                              ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
                              n_positions=int(v["encoder/position_encodings/encodings"].shape[0]))


def _convert(model_dir: Path) -> tuple[WhisperEncoderDims, dict[str, Tensor]]:
    from types import SimpleNamespace

    from .ct2_reader import read_ct2_model
    from .whisper import ct2_to_hf_state_dict

    ct2 = read_ct2_model(Path(model_dir) / "model.bin")
    dims = encoder_dims_from_ct2(ct2)
    sd = ct2_to_hf_state_dict(ct2, SimpleNamespace(d_model=dims.d_model, encoder_layers=dims.n_layers),
                              parts=("encoder",))
    prefix = "model.encoder."
    return dims, {k[len(prefix):]: v.contiguous() for k, v in sd.items()}


def _read(path: Path) -> tuple[WhisperEncoderDims, dict[str, Tensor]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"unexpected format {meta.get('format')!r}")
        dims = WhisperEncoderDims(**json.loads(meta["dims"]))
        return dims, {k: fh.get_tensor(k) for k in fh.keys()}


def _write(path: Path, dims: WhisperEncoderDims, sd: dict[str, Tensor]) -> None:
    from safetensors.torch import save_file

    from engine.fileio import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata={"format": FORMAT, "dims": json.dumps(dims.to_dict())})


def load_encoder_weights(model_dir: Path) -> tuple[WhisperEncoderDims, dict[str, Tensor]]:
    """``(dims, state dict)`` of the Whisper encoder in the CTranslate2 folder ``model_dir``.

    Names are :class:`~engine.encoders.whisper_net.WhisperEncoderNet`'s.  The tensors are shared
    within a process (callers copy them into their module, see ``WhisperAudioEncoder``)."""
    path = encoder_cache_path(model_dir)
    key = str(path)
    with _LOCK:
        hit = _MEMO.get(key)
        if hit is not None:
            return hit
        hit = None
        if path.is_file():
            try:
                hit = _read(path)
            except Exception as exc:  # noqa: BLE001 - damaged/foreign cache file: rebuild it
                print(f"warning: ignoring unreadable whisper weight cache {path} ({exc}); converting again",
                      file=sys.stderr)
        if hit is None:
            hit = _convert(model_dir)
            try:
                _write(path, *hit)
            except OSError as exc:
                print(f"warning: cannot write the whisper weight cache {path} ({exc}); "
                      "set PARLEY_CACHE_DIR to a writable folder for faster starts", file=sys.stderr)
        _MEMO[key] = hit
        return hit

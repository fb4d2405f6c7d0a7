"""Sentences for SynthTalk: a deterministic English grammar over a hand-written lexicon.

Why a grammar: no public-domain sentence list can be downloaded here, and a grammar written for
this project has no licence question at all (MIT, like the repository). The word lists in
``data/lexicon.txt`` were chosen to cover every ARPAbet phone (including the rare ZH, OY, UH, TH)
and every word is checked against the CMU pronouncing dictionary that pocketsphinx ships (BSD), so
every sentence can be force-aligned.

The canonical sentence list is ``data/sentences.txt.gz`` (``id<TAB>text`` lines). It was produced by
:func:`generate_sentences` with the default seed; the file, not Python's RNG, is the source of
truth so a future Python whose ``random`` changes cannot silently change the corpus
(``tests/test_synthtalk_text.py`` checks that regeneration still matches).
"""
from __future__ import annotations

import gzip
import os
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engine.align import cmudict_path, words_of

__all__ = [
    "ARPABET",
    "VOWELS",
    "Sentence",
    "cmudict",
    "cmudict_path",
    "generate_sentences",
    "load_sentences",
    "phone_counts",
    "pronounce",
    "sentence_split",
    "words_of",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
SENTENCES_FILE = DATA_DIR / "sentences.txt.gz"
LEXICON_FILE = DATA_DIR / "lexicon.txt"
DEFAULT_COUNT = 2400
DEFAULT_SEED = 20240611

# CMU 39-phone set (no stress digits).
ARPABET = ["AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH"]
VOWELS = frozenset(["AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"])


@dataclass(frozen=True)
class Sentence:
    """One corpus sentence; ``id`` is ``s0000``-style and stable across builds."""

    id: str
    text: str


@lru_cache(maxsize=1)
def cmudict() -> dict[str, tuple[tuple[str, ...], ...]]:
    """word -> pronunciations (tuples of ARPAbet phones without stress), first one most common."""
    out: dict[str, list[tuple[str, ...]]] = {}
    with open(cmudict_path(), encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 2:
                continue
            word = re.sub(r"\(\d+\)$", "", parts[0])
            phones = tuple(re.sub(r"\d", "", p) for p in parts[1:])
            out.setdefault(word, []).append(phones)
    return {k: tuple(v) for k, v in out.items()}


def pronounce(text: str) -> list[str]:
    """Dictionary phones of ``text`` (first pronunciation of each word); raises on unknown words."""
    d = cmudict()
    phones: list[str] = []
    for w in words_of(text):
        if w not in d:
            raise KeyError(f"word {w!r} is not in the CMU dictionary; rephrase or add a pronunciation")
        phones.extend(d[w][0])
    return phones


# ----------------------------------------------------------------------------- lexicon
def _read_lexicon(path: Path = LEXICON_FILE) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        if current is None:
            raise ValueError(f"{path}: entry before the first [section]: {line!r}")
        sections[current].extend(line.split())
    return sections


_IRREGULAR_PLURALS = {
    "child": "children", "mouse": "mice", "sheep": "sheep", "wolf": "wolves", "knife": "knives",
    "leaf": "leaves", "thief": "thieves", "fish": "fish", "youth": "youths", "shelf": "shelves",
}


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    if noun.endswith("o") and noun in {"potato", "tomato"}:
        return noun + "es"
    return noun + "s"


@lru_cache(maxsize=1)
def _lexicon() -> dict[str, list]:
    d = cmudict()
    lex = _read_lexicon()

    def known(*words: str) -> bool:
        return all(w.lower() in d for w in words)

    out: dict[str, list] = {}
    for sec, entries in lex.items():
        if sec in ("verb_t", "verb_i"):
            pairs = []
            for e in entries:
                base, past = e.split("|")
                if known(base, past):
                    pairs.append((base, past))
            out[sec] = sorted(set(pairs))
        elif sec == "noun":
            out["noun"] = sorted({w for w in entries if known(w)})
            out["plural"] = sorted({(w, _plural(w)) for w in out["noun"] if known(_plural(w))})
        else:
            out[sec] = sorted({w for w in entries if known(w)})
    return out


def _article(word: str) -> str:
    first = cmudict()[word.lower()][0][0]
    return "an" if first in VOWELS else "a"


# Templates: a function of a random.Random returning a sentence string.
def _templates():
    L = _lexicon()

    def n(r): return r.choice(L["noun"])
    def np_(r): return r.choice(L["plural"])[1]
    def a(r): return r.choice(L["adjective"])
    def vt(r): return r.choice(L["verb_t"])
    def vi(r): return r.choice(L["verb_i"])
    def adv(r): return r.choice(L["adverb"])
    def prep(r): return r.choice(L["preposition"])
    def name(r): return r.choice(L["name"])
    def num(r): return r.choice(L["number"])
    def tm(r): return r.choice(L["time"])
    def pl(r): return r.choice(L["place"])
    def an(r, w): return f"{_article(w)} {w}"
    intens = ["very", "rather", "quite", "so", "too", "really"]
    opener = ["Suddenly", "Finally", "Yesterday", "Today", "Later", "Luckily", "Sadly", "Again"]

    return [
        lambda r: f"The {a(r)} {n(r)} {vi(r)[1]} {prep(r)} the {n(r)}.",
        lambda r: f"{name(r)} {vt(r)[1]} the {a(r)} {n(r)} {adv(r)}.",
        lambda r: f"{name(r)} {vt(r)[1]} {num(r)} {a(r)} {np_(r)} at the {pl(r)}.",
        lambda r: f"Did {name(r)} {vt(r)[0]} the {n(r)} last {tm(r)}?",
        lambda r: f"Please {vt(r)[0]} the {a(r)} {n(r)}.",
        lambda r: f"Please {vt(r)[0]} the {n(r)} {prep(r)} the {n(r)}.",
        lambda r: f"We {vi(r)[1]} {adv(r)} {prep(r)} the {a(r)} {pl(r)}.",
        lambda r: f"My {n(r)} was {r.choice(intens)} {a(r)} this {tm(r)}.",
        lambda r: f"Why is the {n(r)} so {a(r)} today?",
        lambda r: f"{r.choice(opener)}, the {a(r)} {n(r)} {vi(r)[1]}.",
        lambda r: f"There were {num(r)} {a(r)} {np_(r)} near the {pl(r)}.",
        lambda r: f"{name(r)} and {name(r)} {vt(r)[1]} {an(r, a(r))} {n(r)}.",
        lambda r: f"The {n(r)} {vt(r)[1]} the {n(r)} and {vi(r)[1]} {adv(r)}.",
        lambda r: f"Where did the {a(r)} {n(r)} {vi(r)[0]}?",
        lambda r: f"{name(r)} wants to {vt(r)[0]} the {n(r)} {prep(r)} the {pl(r)}.",
        lambda r: f"I think the {n(r)} {vt(r)[1]} my {a(r)} {n(r)}.",
        lambda r: f"Never {vt(r)[0]} {an(r, a(r))} {n(r)} in the {pl(r)}.",
        lambda r: f"Can you {vt(r)[0]} the {np_(r)} for {name(r)}?",
        lambda r: f"Her {n(r)} {vi(r)[1]} {prep(r)} the {n(r)} last {tm(r)}.",
        lambda r: f"{num(r).capitalize()} {a(r)} {np_(r)} {vi(r)[1]} {adv(r)}.",
        lambda r: f"How many {np_(r)} did {name(r)} {vt(r)[0]}?",
        lambda r: f"The {pl(r)} was {a(r)} and {a(r)} that {tm(r)}.",
        lambda r: f"{name(r)} said the {n(r)} looked {a(r)}.",
        lambda r: f"Look at the {a(r)} {n(r)}!",
        lambda r: f"If the {n(r)} is {a(r)}, {vt(r)[0]} it {adv(r)}.",
        lambda r: f"Our {a(r)} {n(r)} {vt(r)[1]} {an(r, n(r))} {prep(r)} the {pl(r)} on {tm(r)}.",
        lambda r: f"Nobody could {vt(r)[0]} the {a(r)} {n(r)} {adv(r)}.",
        lambda r: f"The {np_(r)} {vi(r)[1]} while {name(r)} {vt(r)[1]} the {n(r)}.",
        lambda r: f"{name(r)} {vi(r)[1]} {adv(r)}.",
        lambda r: f"{vt(r)[0].capitalize()} the {n(r)}.",
        lambda r: f"The {n(r)} {vi(r)[1]}.",
        lambda r: f"The {a(r)} {n(r)} {vi(r)[1]}.",
        lambda r: f"{name(r)} {vt(r)[1]} the {a(r)} {n(r)} and the {n(r)} {prep(r)} the {pl(r)}.",
        lambda r: f"After the {a(r)} {np_(r)} {vi(r)[1]}, we {vt(r)[1]} the {n(r)} {prep(r)} the {pl(r)}.",
        lambda r: f"Although the {n(r)} was {a(r)}, {name(r)} {vi(r)[1]} {adv(r)} {prep(r)} the {pl(r)}.",
        lambda r: f"When the {a(r)} {n(r)} {vi(r)[1]}, {name(r)} {vt(r)[1]} {num(r)} {a(r)} {np_(r)}.",
        lambda r: f"Bring me the {a(r)} {n(r)}, {name(r)}.",
    ]


def generate_sentences(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED,
                       min_words: int = 3, max_words: int = 12) -> list[Sentence]:
    """``count`` distinct grammar sentences of ``min_words``..``max_words`` words, deterministic in ``seed``."""
    r = random.Random(seed)
    templates = _templates()
    seen: set[str] = set()
    out: list[Sentence] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > count * 50:
            raise RuntimeError(f"grammar produced only {len(out)} distinct sentences; extend data/lexicon.txt")
        text = r.choice(templates)(r)
        text = text[0].upper() + text[1:]
        nw = len(words_of(text))
        if not (min_words <= nw <= max_words) or text in seen:
            continue
        seen.add(text)
        out.append(Sentence(f"s{len(out):04d}", text))
    return out


def write_sentences(sentences: list[Sentence], path: Path = SENTENCES_FILE) -> None:
    """Write ``id<TAB>text`` lines gzip-compressed with a zero mtime (byte-stable), atomically."""
    payload = "".join(f"{s.id}\t{s.text}\n" for s in sentences).encode("utf-8")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(payload)
    os.replace(tmp, path)


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[Sentence, ...]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [line.rstrip("\n").split("\t", 1) for line in fh if line.strip()]
    return tuple(Sentence(i, t) for i, t in rows)


def load_sentences(path: str | os.PathLike | None = None) -> list[Sentence]:
    """The canonical corpus sentences (``data/sentences.txt.gz``)."""
    p = Path(path) if path is not None else SENTENCES_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing; regenerate it with `python -m training.synthtalk sentences`")
    return list(_load(str(p)))


def sentence_split(sentence_id: str) -> str:
    """Split of a sentence: ids ending in 8 -> val, 9 -> test, else train (80/10/10, disjoint)."""
    k = int(sentence_id.lstrip("s")) % 10
    return "val" if k == 8 else "test" if k == 9 else "train"


def phone_counts(sentences: list[Sentence]) -> dict[str, int]:
    """How often each ARPAbet phone occurs in the dictionary pronunciations of ``sentences``."""
    counts = {p: 0 for p in ARPABET}
    for s in sentences:
        for p in pronounce(s.text):
            counts[p] += 1
    return counts

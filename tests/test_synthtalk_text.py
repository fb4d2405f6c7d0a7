"""SynthTalk sentences: enough, distinct, right length, every phone covered, reproducible."""
from __future__ import annotations

import pytest

pytest.importorskip("pocketsphinx")

from training.synthtalk import text as T


def test_at_least_2000_distinct_sentences_of_3_to_12_words():
    s = T.load_sentences()
    assert len(s) >= 2000
    assert len({x.text for x in s}) == len(s)
    assert len({x.id for x in s}) == len(s)
    lengths = [len(T.words_of(x.text)) for x in s]
    assert min(lengths) >= 3 and max(lengths) <= 12
    # a spread of lengths, not one template
    assert len(set(lengths)) >= 8


def test_every_word_is_in_cmudict_and_every_phone_occurs():
    s = T.load_sentences()
    counts = T.phone_counts(s)  # raises KeyError on an unknown word
    assert set(counts) == set(T.ARPABET) and len(T.ARPABET) == 39
    rare = {p: n for p, n in counts.items() if n < 50}
    assert not rare, f"phones with fewer than 50 occurrences: {rare}"


def test_file_matches_the_generator():
    """The stored list is what generate_sentences() produces (catches silent RNG/lexicon drift)."""
    assert T.generate_sentences() == T.load_sentences()


def test_sentence_splits_are_disjoint_and_80_10_10():
    s = T.load_sentences()
    by = {"train": set(), "val": set(), "test": set()}
    for x in s:
        by[T.sentence_split(x.id)].add(x.text)
    assert not (by["train"] & by["val"]) and not (by["train"] & by["test"]) and not (by["val"] & by["test"])
    assert len(by["val"]) == len(by["test"]) == len(s) // 10
    # hand-checked examples of the rule: ...8 -> val, ...9 -> test
    assert T.sentence_split("s0008") == "val" and T.sentence_split("s0119") == "test"
    assert T.sentence_split("s0000") == "train" and T.sentence_split("s2397") == "train"


def test_words_of_and_pronounce():
    assert T.words_of("Don't stop, Anna!") == ["don't", "stop", "anna"]
    assert T.pronounce("the boy") == ["DH", "AH", "B", "OY"]
    with pytest.raises(KeyError, match="xqzt"):
        T.pronounce("xqzt")

"""Sub-token attributions summed back to words: every word's span is the word in the
original text, every sub-token sits inside its word, and no attribution is lost."""

from __future__ import annotations

import random

import pytest
from explain_fixtures import INFO, tokenizer

from tunelab.errors import DataError
from tunelab.explain.encode import Encoded, encode_prompt, encode_split, encode_text
from tunelab.explain.words import to_words, word_scores
from tunelab.tasks.token_classification import split_words

TEXTS = ["  Unbelievably   GOOD!!  it's (sort of) a re-make of U.S. fare…",
         "naïve, self-indulgent and 100% overlong — a shame",
         "the end"]


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def check_lines_up(enc: Encoded) -> None:
    for word, start, end in enc.words:
        assert enc.text[start:end] == word
    for span, w in zip(enc.spans, enc.word_of):
        if span is None:
            assert w is None
            continue
        _, a, b = enc.words[w]
        inner = enc.text[span[0]:span[1]]
        lead = len(inner) - len(inner.lstrip())  # a BPE piece may carry the space before it
        assert a <= span[0] + lead and span[1] <= b


def check_sums(enc: Encoded) -> None:
    rng = random.Random(0)
    scores = [rng.uniform(-1, 1) for _ in enc.input_ids]
    words = to_words(enc, scores)
    kept = sum(s for s, w in zip(scores, enc.word_of) if w is not None)
    assert sum(w.score for w in words) == pytest.approx(kept)
    assert [w.score for w in words] == word_scores(enc, scores)


@pytest.mark.parametrize("text", TEXTS)
def test_classification_words_line_up_with_the_text(tok, text):
    enc = encode_text(tok, INFO, text)
    assert [w for w, _, _ in enc.words] == [w for w, _, _ in split_words(text)]
    assert enc.input_ids == tok(text, truncation=True, max_length=INFO["max_length"])["input_ids"]
    check_lines_up(enc)
    check_sums(enc)


def test_a_text_pair_indexes_the_whole_tab_joined_string(tok):
    text = "a fine film\tnot bad at all , really"
    enc = encode_text(tok, {**INFO, "text_pair": True}, text)
    check_lines_up(enc)
    assert [w for w, _, _ in enc.words][-3:] == ["all", ",", "really"]
    assert enc.token_type_ids is not None and enc.token_type_ids[-2] == 1
    with pytest.raises(DataError, match="separate the two texts with a tab"):
        encode_text(tok, {**INFO, "text_pair": True}, "no tab here")


def test_words_cut_by_max_length_are_left_out(tok):
    text = " ".join(f"word{i}" for i in range(40))
    enc = encode_text(tok, {**INFO, "max_length": 12}, text)
    check_lines_up(enc)
    assert 0 < len(enc.words) < 40 and enc.words[0][0] == "word0"


@pytest.mark.parametrize("text", TEXTS)
def test_ner_words_line_up_with_the_text(tok, text):
    enc = encode_split(tok, INFO, text)
    assert [w for w, _, _ in enc.words] == [w for w, _, _ in split_words(text)]
    check_lines_up(enc)
    check_sums(enc)


def test_prompt_words_line_up_through_a_byte_level_bpe():
    from sft_fixtures import tiny_tokenizer

    text = "hello world, how are you today?"
    enc = encode_prompt(tiny_tokenizer(), text)
    check_lines_up(enc)
    check_sums(enc)
    assert {w for w in enc.word_of if w is not None} == set(range(len(split_words(text))))


def test_empty_text_is_refused_with_the_text(tok):
    with pytest.raises(DataError, match="'   ': nothing to explain"):
        encode_text(tok, INFO, "   ")

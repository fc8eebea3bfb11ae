"""Faithfulness metrics: on a model decided by one token, attributions that find it beat a
random ranking on all three numbers, and the numbers follow their definitions."""

from __future__ import annotations

import math

import pytest
from explain_fixtures import INFO, KEY, SENTENCES, tokenizer, toy_model

from tunelab.explain.attribute import class_target
from tunelab.explain.encode import encode_text
from tunelab.explain.faithfulness import (
    BINS,
    DELETION,
    RANDOM,
    batch_scores,
    faithfulness,
    faithfulness_table,
    top,
)


@pytest.fixture(scope="module")
def setup():
    tok = tokenizer()
    return tok, toy_model(tok)


def test_explanations_beat_a_random_ranking(setup):
    tok, model = setup
    table = faithfulness_table(model, tok, INFO, SENTENCES, ["ig", "grad_x_input"], steps=20,
                               baseline_id=tok.pad_token_id)
    for method in ("ig", "grad_x_input"):
        assert table[method]["comprehensiveness"] > table[RANDOM]["comprehensiveness"]
        assert table[method]["sufficiency"] < table[RANDOM]["sufficiency"]
        assert table[method]["deletion_aopc"] > table[RANDOM]["deletion_aopc"]
        assert table[method]["n"] == len(SENTENCES) and table[method]["seconds"] > 0
    assert table["ig"]["completeness_error"] <= table["ig"]["completeness_error_max"] < 1e-3
    assert "completeness_error" not in table["grad_x_input"]


def test_the_metrics_follow_their_definitions(setup):
    tok, model = setup
    enc = encode_text(tok, INFO, SENTENCES[0])
    target = class_target(1, "label 1")
    key = [w for w, _, _ in enc.words].index(KEY)
    first = [1.0 if k == key else 0.0 for k in range(len(enc.words))]
    last = [-1.0 if k == key else 0.0 for k in range(len(enc.words))]
    good, bad = faithfulness(model, enc, target, first), faithfulness(model, enc, target, last)
    assert good.comprehensiveness > bad.comprehensiveness
    assert good.sufficiency < bad.sufficiency
    full, specials_only = batch_scores(model, enc, target, [enc.keep_words(set(range(len(
        enc.words)))), enc.keep_words(set())])
    assert len(good.curve) == len(DELETION)
    assert good.curve[0] == pytest.approx(full, abs=1e-6)
    assert good.curve[-1] == pytest.approx(specials_only, abs=1e-6)
    assert good.deletion_aopc == pytest.approx(sum(full - p for p in good.curve) / len(DELETION))


def test_every_bin_erases_at_least_one_word():
    order = list(range(7))
    assert [len(top(order, k)) for k in BINS] == [max(1, math.ceil(k * 7)) for k in BINS]
    assert top(order, 0.0) == set() and top(order, 1.0) == set(order)

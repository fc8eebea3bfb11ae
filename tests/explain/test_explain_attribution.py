"""Attribution methods: IG completeness, the deciding token found, the randomisation sanity
check (Adebayo et al. 2018), attention rollout's shape and its model left as it was."""

from __future__ import annotations

import copy

import pytest
from explain_fixtures import (
    INFO,
    KEY,
    SENTENCES,
    randomise,
    sharp_bert,
    spearman,
    tokenizer,
    toy_model,
)

from tunelab.errors import ConfigError, ModelError
from tunelab.explain.attribute import attribute, class_target
from tunelab.explain.encode import encode_text
from tunelab.explain.words import word_scores

COMPLETENESS_TOL = 1e-2  # |sum(attributions) - (F(x) - F(baseline))|, probability units, 50 steps
RANDOMISED_RANK_CORR = 0.5  # mean Spearman of word scores, trained vs randomised weights


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.fixture(scope="module")
def models(tok):
    return {"toy": toy_model(tok), "sharp_bert": sharp_bert(tok)}


def _words(model, tok, text: str, method: str, label: int = 1, steps: int = 50):
    enc = encode_text(tok, INFO, text)
    attr = attribute(model, enc, class_target(label, f"label {label}"), method, steps,
                     tok.pad_token_id)
    return enc, attr, word_scores(enc, attr.tokens)


@pytest.mark.parametrize("model", ["toy", "sharp_bert"])
def test_ig_attributions_sum_to_the_output_difference(tok, models, model):
    m = models[model]
    errors = {}
    for steps in (8, 50):
        errors[steps] = []
        for text in SENTENCES:
            _, attr, _ = _words(m, tok, text, "ig", steps=steps)
            assert abs(sum(attr.tokens) - attr.gap) == pytest.approx(abs(attr.delta), abs=1e-5)
            errors[steps].append(abs(attr.delta))
    assert max(errors[50]) < COMPLETENESS_TOL
    assert sum(errors[50]) <= sum(errors[8]) + 1e-6  # more steps: a closer path integral


@pytest.mark.parametrize("method", ["ig", "grad_x_input"])
def test_the_deciding_token_gets_the_largest_attribution(tok, models, method):
    m = models["toy"]
    for text in SENTENCES:
        enc, _, scores = _words(m, tok, text, method)
        assert enc.words[max(range(len(scores)), key=scores.__getitem__)][0] == KEY
        # explaining the other label, the same word pulls hardest the other way
        _, _, against = _words(m, tok, text, method, label=0)
        assert enc.words[min(range(len(against)), key=against.__getitem__)][0] == KEY


@pytest.mark.parametrize("model,method", [("toy", "ig"), ("toy", "grad_x_input"),
                                          ("sharp_bert", "ig"), ("sharp_bert", "rollout")])
def test_attributions_change_when_the_weights_are_randomised(tok, models, model, method):
    m = models[model]
    shuffled = randomise(copy.deepcopy(m), seed=1)
    corr = [spearman(_words(m, tok, t, method)[2], _words(shuffled, tok, t, method)[2])
            for t in SENTENCES]
    assert sum(corr) / len(corr) < RANDOMISED_RANK_CORR


def test_rollout_is_a_distribution_over_tokens_and_keeps_the_attention_kernel(tok, models):
    m = models["sharp_bert"]
    before = m.config._attn_implementation
    for text in SENTENCES:
        _, attr, _ = _words(m, tok, text, "rollout")
        assert min(attr.tokens) >= 0
        assert sum(attr.tokens) == pytest.approx(1.0, abs=1e-4)
    assert m.config._attn_implementation == before


def test_bad_method_steps_and_attention_free_models_are_refused(tok):
    enc = encode_text(tok, INFO, SENTENCES[0])
    with pytest.raises(ConfigError, match="--method 'shap': choose one of ig, grad_x_input"):
        attribute(toy_model(tok), enc, class_target(1, "x"), "shap")
    with pytest.raises(ConfigError, match="--steps 1"):
        attribute(toy_model(tok), enc, class_target(1, "x"), "ig", steps=1)
    with pytest.raises(ModelError, match="OneTokenClassifier returns no attention maps"):
        attribute(toy_model(tok), enc, class_target(1, "x"), "rollout")

"""LoHa and LoKr: peft's factor shapes, the Hadamard gradient, training-time dropouts, Conv1D."""

from __future__ import annotations

import pytest
import torch

from test_methods_contract import INPUT, method_cfg, perturb, tiny_classifier
from tunelab import methods
from tunelab.errors import MethodError
from tunelab.methods.loha import HadamardProduct
from tunelab.methods.lokr import factorization


@pytest.mark.parametrize("factor", [-1, 1, 2, 3, 4, 8, 16])
def test_lokr_factorization_is_peft_s(factor):
    from peft.tuners.lokr.layer import factorization as peft_factorization

    for dim in (1, 2, 7, 12, 32, 64, 96, 127, 128, 384, 768, 1000, 1536, 3072, 4096, 11008):
        assert factorization(dim, factor) == peft_factorization(dim, factor), (dim, factor)


def test_hadamard_product_gradient_matches_autograd():
    g = torch.Generator().manual_seed(0)
    w = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True)
         for s in ((5, 3), (3, 4), (5, 3), (3, 4))]
    assert torch.autograd.gradcheck(HadamardProduct.apply, w)


def _train_mode_without_model_dropout(model):
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


@pytest.mark.parametrize("name,opts,peft_cls,kwargs", [
    ("loha", {"r": 2, "alpha": 4, "rank_dropout": 0.3, "module_dropout": 0.2}, "LoHaConfig",
     {"r": 2, "alpha": 4, "rank_dropout": 0.3, "module_dropout": 0.2}),
    ("lokr", {"r": 2, "alpha": 4, "rank_dropout": 0.3, "module_dropout": 0.2}, "LoKrConfig",
     {"r": 2, "alpha": 4, "rank_dropout": 0.3, "module_dropout": 0.2}),
    ("lokr", {"r": 2, "rank_dropout": 0.5, "rank_dropout_scale": True},
     "LoKrConfig", {"r": 2, "rank_dropout": 0.5, "rank_dropout_scale": True}),
], ids=["loha", "lokr", "lokr-scaled"])
def test_training_time_dropouts_match_peft_draw_for_draw(name, opts, peft_cls, kwargs):
    import peft

    model = tiny_classifier()
    methods.apply(model, method_cfg(name, {**opts, "targets": ["query", "value"]}))
    perturb(model)
    theirs = peft.get_peft_model(tiny_classifier(), getattr(peft, peft_cls)(
        task_type="SEQ_CLS", target_modules=["query", "value"], **kwargs))
    ours_state = model.state_dict()
    with torch.no_grad():
        for key, p in theirs.named_parameters():
            if p.requires_grad:
                p.copy_(ours_state[key.removeprefix("base_model.model.").replace(".default", "")
                                   .replace("modules_to_save.", "")])
    _train_mode_without_model_dropout(model)
    _train_mode_without_model_dropout(theirs)
    differs_from_eval = False
    for seed in range(6):
        torch.manual_seed(seed)
        ours_out = model(**INPUT).logits
        torch.manual_seed(seed)
        theirs_out = theirs(**INPUT).logits
        assert torch.allclose(ours_out, theirs_out, atol=1e-5), seed
        with torch.no_grad():
            differs_from_eval |= not torch.allclose(ours_out, model.eval()(**INPUT).logits)
        model.train()
    assert differs_from_eval  # the dropouts did act


@pytest.mark.parametrize("name", ["loha", "lokr"])
def test_gpt2_conv1d_is_refused_with_what_to_use(name):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=2, n_positions=16))
    with pytest.raises(MethodError, match=f"method {name}: transformer.h.0.attn.c_attn is a GPT-2 "
                                          "style Conv1D layer; .* use lora, ia3 or vera"):
        methods.apply(model, method_cfg(name, {}))


def test_lokr_reports_its_factor_shapes():
    report = methods.apply(tiny_classifier(), method_cfg("lokr", {"r": 8, "targets": ["query"]}))
    assert "Kronecker factors W1 x W2: (4, 4) x (8, 8)" in report.lines()

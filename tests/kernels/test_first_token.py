"""The classifier's last layer finishes only the first token: same logits and gradients,
less work, and nothing changed outside the forward that asked for it."""

import torch
from transformers import AutoTokenizer

from tunelab.data.batching import encode
from tunelab.models import load_classifier, load_token_classifier
from tunelab.kernels.first_token import first_token_only
from tunelab.tasks.classification import ClassificationTask

from conftest import with_lora_everywhere

TEXTS = ["a great movie", "terrible and boring from the first scene to the last one", "ok",
         "the plot was thin but the acting carried it"]


def _batch(model_dir):
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return dict(tok(TEXTS, padding=True, return_tensors="pt"))  # right-padded, mixed lengths


def _logits_and_grads(model, batch, cut: bool):
    model.zero_grad()
    if cut:
        with first_token_only(model):
            logits = model(**batch).logits
    else:
        logits = model(**batch).logits
    (logits * torch.tensor([1.0, -2.0])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def test_same_logits_and_gradients_as_the_full_forward(tiny_model_dir):
    torch.manual_seed(0)
    model = with_lora_everywhere(load_classifier(tiny_model_dir, ["neg", "pos"], dropout=0.0))
    batch = _batch(tiny_model_dir)
    full, full_grads = _logits_and_grads(model, batch, cut=False)
    cut, cut_grads = _logits_and_grads(model, batch, cut=True)
    assert torch.allclose(cut, full, atol=1e-6)
    assert set(cut_grads) == set(full_grads) and len(full_grads) > 10
    # the last layer's own LoRA on its output blocks trains too, from the first token alone
    assert any(n.startswith("bert.encoder.layer.1.output.dense.lora") for n in cut_grads)
    for name, grad in full_grads.items():
        assert torch.allclose(cut_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_last_layer_runs_on_one_row_per_example_only_inside_the_block(tiny_model_dir):
    model = load_classifier(tiny_model_dir, ["neg", "pos"], dropout=0.0)
    batch = _batch(tiny_model_dir)
    seen = []
    model.bert.encoder.layer[-1].intermediate.register_forward_hook(
        lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    with first_token_only(model):
        model(**batch)
    model(**batch)
    width = batch["input_ids"].shape[1]
    assert seen == [(4, 1, 32), (4, width, 32)]  # the feed-forward block: cut, then whole again


def test_models_whose_head_reads_every_token_are_left_alone(tiny_model_dir):
    model = load_token_classifier(tiny_model_dir, ["O", "B-X"], dropout=0.0)
    batch = _batch(tiny_model_dir)
    with first_token_only(model):
        inside = model(**batch).logits
    assert inside.shape == (4, batch["input_ids"].shape[1], 2)
    assert torch.allclose(inside, model(**batch).logits)


def test_classification_task_scores_match_a_plain_forward(tiny_model_dir):
    """predict() and loss_sum() go through the cut; their numbers are the plain model's."""
    torch.manual_seed(0)
    model = load_classifier(tiny_model_dir, ["neg", "pos"], dropout=0.0).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    task = ClassificationTask(["neg", "pos"], 64, tok.pad_token_id)
    data = encode(tok, TEXTS, None, [0, 1, 0, 1], 64)
    pred = task.predict(model, data, batch_size=2, device=torch.device("cpu"))
    plain = model(**_batch(tiny_model_dir)).logits.softmax(-1)
    assert torch.allclose(pred.probs, plain, atol=1e-6)
    batch = task.collate(data, [0, 1, 2, 3])
    loss = task.loss_sum(model, batch).item()
    expected = torch.nn.functional.cross_entropy(model(**_batch(tiny_model_dir)).logits,
                                                 torch.tensor([0, 1, 0, 1]), reduction="sum")
    assert abs(loss - expected.item()) < 1e-5

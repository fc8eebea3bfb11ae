"""In-process federations on a tiny BERT: FedAvg with one client is centralised training,
rounds are logged, the run directory is an ordinary run, FedProx and client-level DP act."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

from tunelab.cli import main
from tunelab.commands.evaluate import evaluate
from tunelab.config import validate
from tunelab.federate.config import validate_federated
from tunelab.federate.run import federate
from tunelab.federate.worker import Worker
from tunelab.recipes.run import train

WEIGHTS = "adapter/adapter_model.safetensors"


def _tree(model: Path, data: dict, out: Path, **train_keys) -> dict:
    tree = tiny_config(model, data, out, load_best_at_end=False, **train_keys)
    return tree


def _fed(tree: dict, **fed) -> dict:
    tree = copy.deepcopy(tree)
    tree["federated"] = {"clients": 1, "rounds": 1, "local_steps": 4, **fed}
    return tree


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("train_keys, rounds, steps", [
    ({}, 1, 4),  # AdamW, linear schedule with warmup: one round of 4 steps
    ({"optimizer": "sgd", "momentum": 0.0, "schedule": "constant", "warmup_steps": 0}, 3, 2),
])
def test_one_client_fedavg_equals_centralised(tiny_model_dir: Path, tiny_data: dict,
                                              tmp_path: Path, train_keys: dict, rounds: int,
                                              steps: int) -> None:
    """One client, full participation: R rounds of S local steps are R*S centralised steps
    (stateless SGD carries nothing across rounds, so several rounds match too)."""
    base = _tree(tiny_model_dir, tiny_data, tmp_path / "central", max_steps=rounds * steps,
                 **train_keys)
    central = train(validate(copy.deepcopy(base)), log=lambda _: None)
    fed_tree = _fed(base, rounds=rounds, local_steps=steps)
    fed_tree["output_dir"] = str(tmp_path / "fed")
    summary = federate(validate_federated(fed_tree), log=lambda _: None)
    a, b = load_file(tmp_path / "central" / WEIGHTS), load_file(tmp_path / "fed" / WEIGHTS)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4)
    assert central["final_dev"]["loss"] != pytest.approx(central["initial_dev"]["loss"],
                                                         abs=1e-6)  # training moved the weights
    assert summary["final_dev"]["accuracy"] == pytest.approx(central["final_dev"]["accuracy"])
    assert summary["final_dev"]["loss"] == pytest.approx(central["final_dev"]["loss"], abs=1e-4)


def test_rounds_are_logged_and_the_run_is_an_ordinary_run(tiny_model_dir: Path,
                                                          tiny_data: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    tree = _fed(_tree(tiny_model_dir, tiny_data, tmp_path / "run"), clients=3, rounds=2,
                local_steps=2, clients_per_round=2, split={"kind": "dirichlet", "alpha": 0.5})
    summary = federate(validate_federated(tree), log=lambda _: None)
    records = _records(tmp_path / "run")
    assert [r["round"] for r in records] == [0, 1, 2]
    adapter = load_file(tmp_path / "run" / WEIGHTS)
    adapter_bytes = sum(t.numel() * t.element_size() for t in adapter.values())
    for r in records[1:]:
        assert r["clients_trained"] == 2
        trained = [c for c in r["clients"] if "train_steps" in c]
        assert len(trained) == 2 and len(r["clients"]) == 3  # every client scores the global
        for c in r["clients"]:
            assert 0.0 <= c["dev_accuracy"] <= 1.0
        for c in trained:
            assert c["train_steps"] == 2 and 0.0 < c["train_loss"] < 5.0
            assert 0.0 <= c["train_local_accuracy"] <= 1.0  # its own model on its dev share
        for c in trained:  # the adapter and head go out and come back, nothing else
            # (Flower's serialised arrays: the tensors plus a small header each)
            assert 2 * adapter_bytes <= c["train_bytes"] <= 2 * (adapter_bytes + 256 * len(adapter))
        assert r["full_model_train_bytes"] > 50 * r["train_bytes"]
        assert 0.0 <= r["accuracy"] <= 1.0
    assert summary["rounds"] == 2
    # eval reads the run directory like any other and scores the saved global adapter
    scores = evaluate(tmp_path / "run", None, "dev")
    assert scores["accuracy"] == pytest.approx(records[-1]["accuracy"])
    assert summary["final_dev"]["accuracy"] == pytest.approx(records[-1]["accuracy"])
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), "a wonderful film"]) == 0
    label, prob, text = capsys.readouterr().out.strip().splitlines()[-1].split("\t")
    assert label in ("0", "1") and 0.5 <= float(prob) <= 1.0 and text == "a wonderful film"


def test_client_side_dp_clips_updates_and_records_noise(tiny_model_dir: Path,
                                                        tiny_data: dict,
                                                        tmp_path: Path) -> None:
    clip = 1e-3
    tree = _fed(_tree(tiny_model_dir, tiny_data, tmp_path / "dp"), clients=2, rounds=1,
                local_steps=3, client_scores=False,
                dp={"clipping_norm": clip, "noise_multiplier": 0.0})
    fed = validate_federated(tree)
    # the starting adapter: the same seed builds the same model
    start_tree = _fed(_tree(tiny_model_dir, tiny_data, tmp_path / "start"), clients=2,
                      rounds=1, local_steps=3, client_scores=False)
    start = Worker(validate_federated(start_tree), lambda _: None).state()
    summary = federate(fed, log=lambda _: None)
    end = _by_param(load_file(tmp_path / "dp" / WEIGHTS), start)
    norm = torch.sqrt(sum(((end[k] - start[k]) ** 2).sum() for k in start)).item()
    assert 0 < norm <= clip * 1.0001  # the mean of updates clipped to `clip`
    assert summary["dp"]["noise_std"] == 0.0
    noisy = _fed(tree["federated"] and _tree(tiny_model_dir, tiny_data, tmp_path / "n"),
                 clients=2, rounds=1, local_steps=1, client_scores=False,
                 dp={"clipping_norm": 0.5, "noise_multiplier": 2.0, "clipping": "server"})
    federate(validate_federated(noisy), log=lambda _: None)
    assert _records(tmp_path / "n")[-1]["noise_std"] == pytest.approx(2.0 * 0.5 / 2)


def _by_param(saved: dict, start: dict) -> dict:
    """The saved adapter's tensors under the model's parameter names (same order, shapes)."""
    out = {}
    for name, tensor in start.items():
        matches = [k for k in saved if saved[k].shape == tensor.shape
                   and _stem(k) in name]
        assert matches, name
        out[name] = saved[matches[0]]
        saved = {k: v for k, v in saved.items() if k != matches[0]}
    return out


def _stem(peft_key: str) -> str:
    return peft_key.split(".")[-2]  # lora_A / lora_B / dense / out_proj ...


def test_fedprox_pulls_clients_toward_the_global_adapter(tiny_model_dir: Path,
                                                         tiny_data: dict,
                                                         tmp_path: Path) -> None:
    """Plain SGD: with lr * mu = 0.95 the proximal term undoes most of each step's drift."""
    tree = _fed(_tree(tiny_model_dir, tiny_data, tmp_path / "p", optimizer="sgd", momentum=0.0,
                      schedule="constant", warmup_steps=0, max_grad_norm=None, lr=5e-3),
                clients=2, local_steps=6)
    worker = Worker(validate_federated(tree), lambda _: None)
    start = worker.state()

    def drift(mu: float) -> float:
        worker.load(start)
        worker.fit(0, 1, mu)
        end = worker.state()
        return torch.sqrt(sum(((end[k] - start[k]) ** 2).sum() for k in start)).item()

    plain, prox = drift(0.0), drift(190.0)
    assert 0 < prox < 0.5 * plain


def _start(tree: dict) -> dict[str, torch.Tensor]:
    """The adapter and head every process starts from (the same seed builds the same model)."""
    return Worker(validate_federated(copy.deepcopy(tree)), lambda _: None).state()


def test_one_file_per_client(tiny_model_dir: Path, tiny_data: dict, tmp_path: Path) -> None:
    lines = tiny_data["train"].read_text().splitlines()
    files = []
    for k, (lo, hi) in enumerate([(1, 31), (31, 97)]):  # 30 and 66 rows under one header
        path = tmp_path / f"client{k}.tsv"
        path.write_text("\n".join([lines[0], *lines[lo:hi]]) + "\n")
        files.append(str(path))
    tree = _fed(_tree(tiny_model_dir, tiny_data, tmp_path / "files"), clients=2, rounds=1,
                local_steps=1, split={"kind": "files", "files": files})
    worker = Worker(validate_federated(tree), lambda _: None)
    assert [len(s.train) for s in worker.shards] == [30, 66]
    assert [sum(s.labels.values()) for s in worker.shards] == [30, 66]
    federate(validate_federated(tree), log=lambda _: None)
    trained = _records(tmp_path / "files")[1]["clients"]
    assert sorted(c["train_num-examples"] for c in trained) == [30, 66]


@pytest.mark.parametrize("strategy", ["fedadam", "fedyogi"])
def test_server_optimiser_steps_are_bounded_by_its_lr(tiny_model_dir: Path, tiny_data: dict,
                                                     tmp_path: Path, strategy: str) -> None:
    """Adam / Yogi on the server: the first (bias-corrected) step moves each weight by at
    most server_lr, whatever the size of the averaged client update."""
    eta = 1e-3
    tree = _fed(_tree(tiny_model_dir, tiny_data, tmp_path / strategy), clients=2,
                local_steps=2, client_scores=False, strategy=strategy, server_lr=eta)
    start = _start(tree)
    federate(validate_federated(tree), log=lambda _: None)
    end = _by_param(load_file(tmp_path / strategy / WEIGHTS), start)
    moved = max((end[k] - start[k]).abs().max().item() for k in start)
    assert 0 < moved <= eta * (1 + 1e-5)  # (less than eta where an update is near tau)


def test_fedavgm_scales_and_carries_the_averaged_update(tiny_model_dir: Path, tiny_data: dict,
                                                       tmp_path: Path) -> None:
    """FedAvgM (Hsu et al., 2019): the global weights move by server_lr times the averaged
    client update, plus momentum times the previous move. One client, one round: exactly
    server_lr x what FedAvg moves (the client trains the same from the same start)."""
    def moved(name: str, **fed) -> dict[str, torch.Tensor]:
        tree = _fed(_tree(tiny_model_dir, tiny_data, tmp_path / name), client_scores=False, **fed)
        start = _start(tree)
        federate(validate_federated(tree), log=lambda _: None)
        end = _by_param(load_file(tmp_path / name / WEIGHTS), start)
        return {k: end[k] - start[k] for k in start}

    plain = moved("avg")
    scaled = moved("avgm", strategy="fedavgm", server_lr=2.5, server_momentum=0.9)
    assert max(d.abs().max().item() for d in plain.values()) > 0
    for k, d in plain.items():
        torch.testing.assert_close(scaled[k], 2.5 * d, rtol=1e-4, atol=1e-6)


def test_logit_adjustment_keeps_a_one_label_client_from_learning_its_prior(
        tiny_model_dir: Path, tiny_data: dict, tmp_path: Path) -> None:
    """Client 0 holds one label and a few examples of the other. Plain local training moves
    the global model toward predicting that label for everything; with logit_adjust (tau = 1)
    its loss reads logits + log(its prior), whose expected gradient no longer points at the
    prior, so the same steps move the prediction much less. The training loss is the
    cross-entropy of the offset logits, by the client's add-one label prior."""
    lines = tiny_data["train"].read_text().splitlines()
    header, rows = lines[0], lines[1:]
    label_col = header.split("\t").index("label")
    one = sorted({r.split("\t")[label_col] for r in rows})[0]
    files = []
    ones = [r for r in rows if r.split("\t")[label_col] == one]
    others = [r for r in rows if r.split("\t")[label_col] != one]
    for k, part in enumerate([ones + others[: len(ones) // 9], rows]):  # 90% / 10%, then all
        path = tmp_path / f"client{k}.tsv"
        path.write_text("\n".join([header, *part]) + "\n")
        files.append(str(path))

    def mean_prob_of_one(tau: float) -> tuple[float, Worker]:
        tree = _fed(_tree(tiny_model_dir, tiny_data, tmp_path / f"t{tau}", lr=0.05), clients=2,
                    local_steps=10, split={"kind": "files", "files": files}, logit_adjust=tau)
        worker = Worker(validate_federated(tree), lambda _: None)

        def prob() -> float:
            probs = worker.setup.task.predict(worker.setup.model, worker.setup.dev, 16,
                                              torch.device("cpu")).probs
            return probs[:, worker.setup.task.index[one]].mean().item()

        before = prob()
        worker.fit(0, 1)
        return prob() - before, worker

    plain, _ = mean_prob_of_one(0.0)
    adjusted, worker = mean_prob_of_one(1.0)
    assert plain > 0.3 and abs(adjusted) < 0.5 * plain, (plain, adjusted)

    from tunelab.federate.worker import PriorAdjusted

    task = PriorAdjusted(worker.setup.task, worker.shards[0].labels, 1.0)
    n = len(worker.shards[0].train)
    counts = torch.tensor([worker.shards[0].labels[label] for label in worker.setup.task.index],
                          dtype=torch.float32)
    batch = worker.setup.task.collate(worker.shards[0].train, list(range(4)))
    worker.setup.model.eval()  # no dropout: the two losses see the same logits
    with torch.no_grad():
        logits = worker.setup.task.logits(worker.setup.model, batch)
        want = torch.nn.functional.cross_entropy(
            logits + ((counts + 1) / (n + len(counts))).log(), batch["labels"], reduction="sum")
        torch.testing.assert_close(task.loss_sum(worker.setup.model, batch), want)

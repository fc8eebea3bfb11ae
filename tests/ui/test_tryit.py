"""Try it: chat with causal LM runs (streamed, adapter switch) and classify with an encoder
run, through the API, against what the inference code gives directly; compare two runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from tunelab.commands.ui import build

ASK = [{"role": "user", "content": "say fox"}]


@pytest.fixture(scope="module")
def chat_runs(tmp_path_factory) -> Path:
    """RUNS/a and RUNS/b: two LoRA runs (different seeds and steps) on one tiny Llama."""
    from sft_fixtures import PAIRS, tiny_llama_dir

    from tunelab.config import validate
    from tunelab.recipes.run import train

    root = tmp_path_factory.mktemp("chat")
    data = root / "train.json"
    data.write_text(json.dumps([{"instruction": q, "input": "", "output": a}
                                for q, a in PAIRS * 6]))
    base = tiny_llama_dir(root / "llama")
    for name, steps, seed in (("a", 8, 0), ("b", 5, 1)):
        tree = {"task": "causal_lm", "model": {"name": str(base), "max_length": 64},
                "data": {"path": str(data), "eval_size": 4},
                "method": {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
                "train": {"batch_size": 4, "lr": 5e-2, "max_steps": steps, "seed": seed,
                          "warmup_steps": 0, "schedule": "constant"},
                "output_dir": str(root / "runs" / name)}
        train(validate(tree), log=lambda _: None)
    return root / "runs"


def _reply(run_dir: Path, adapter: str | None, extra: list[str]) -> str:
    from tunelab.commands.generate import load_generator, render
    from tunelab.tasks.causal_lm import generate_text

    model, tok = load_generator(str(run_dir), extra, adapter)
    return generate_text(model, tok, render(tok, ASK), 12, torch.device("cpu"))


def test_chat_streams_the_reply_of_the_chosen_adapter(chat_runs: Path):
    client = TestClient(build(chat_runs))
    assert client.get("/api/adapters/a").json() == {"adapters": ["a", "b", "base"]}
    replies = {}
    for adapter in ("a", "b", "base"):
        with client.stream("POST", "/api/chat", json={"run": "a", "messages": ASK,
                                                      "adapter": adapter,
                                                      "max_new_tokens": 12}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            chunks = [c for c in r.iter_text() if c]
        replies[adapter] = "".join(chunks)
        want = _reply(chat_runs / "a", adapter, [f"b={chat_runs / 'b'}"])
        assert replies[adapter] == want, adapter
    assert len(set(replies.values())) == 3  # the switch changes the answer
    bad = client.post("/api/chat", json={"run": "a", "messages": ASK, "adapter": "zz"})
    assert bad.status_code == 400 and "choose one of a, b, base" in bad.json()["error"]
    wrong = client.post("/api/predict", json={"run": "a", "text": "hi"})
    assert wrong.status_code == 400 and "causal_lm run" in wrong.json()["error"]


def test_compare_page_holds_both_runs(chat_runs: Path):
    client = TestClient(build(chat_runs))
    r = client.get("/api/compare?run=a&run=b")
    assert r.status_code == 200 and r.text.lstrip().lower().startswith("<!doctype html")
    for name in ("a", "b"):
        steps = json.loads((chat_runs / name / "summary.json").read_text())["steps"]
        assert name in r.text and str(steps) in r.text
    assert (chat_runs / ".ui" / "compare" / "compare.html").is_file()


def test_tagging_and_explaining_an_encoder_run(ner_run: Path, tmp_path: Path):
    from tunelab.runs.trained import load_trained
    from tunelab.tasks.inference import extract_entities

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "ner").symlink_to(ner_run, target_is_directory=True)
    client = TestClient(build(runs))
    text = "John Smith lives in Paris ."
    r = client.post("/api/predict", json={"run": "ner", "text": text})
    assert r.status_code == 200, r.text
    model, tok, info = load_trained(ner_run)
    want = extract_entities(model, tok, info, [text])
    got = r.json()["entities"]
    assert [(e["type"], e["start"], e["end"]) for e in got] == \
        [(e.type, e.start, e.end) for e in want.entities[0]]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in got)
    explained = client.post("/api/predict", json={"run": "ner", "text": text, "explain": True})
    assert explained.status_code == 200, explained.text
    tokens = explained.json()["explanations"][0]["tokens"]
    assert tokens and all(isinstance(t["score"], float) for t in tokens)

"""`tunelab serve EXPORT`: an ONNX export (`tunelab export RUN --to onnx OUT`) served by ONNX
Runtime over a real socket answers /v1/classify and /v1/ner as the PyTorch-served run does,
an int8 export answers from its int8 file, /v1/models says which backend serves each, and
what the logits-only graph cannot do is refused with an OpenAI error object naming why."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from conftest import tiny_config, toy_sentiment_files
from server_fixtures import live_server

from tunelab.cli import main
from tunelab.config import validate
from tunelab.recipes.run import train
from tunelab.runs.onnx_model import OnnxModel, load_onnx_run
from tunelab.serve.app import create_app
from tunelab.serve.encoders import EncoderModel
from tunelab.serve.targets import load_targets
from tunelab.tasks.inference import classify

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ADMIN = "admin-key"
LONG = "the movie was really good and the acting quite fine " * 10  # cut at max_length 32
TEXTS = ["a wonderful story", "the plot was awful and boring", LONG, "x", "Ünïcödé — ok?"]
NER_TEXTS = ["John Smith visited Paris.", "the report said Anna met Google",
             "Mary Jones flew to London on Monday ."]
USER = [{"role": "user", "content": "hello"}]


@dataclass
class World:
    url: str  # admin key ADMIN
    exports: dict[str, Path]  # model id -> export directory

    def post(self, route: str, body: dict[str, Any], **kw: Any) -> httpx2.Response:
        return httpx2.post(self.url + route, json=body, timeout=60, **kw)

    def answer(self, route: str, model: str, texts: list[str]) -> list[dict[str, Any]]:
        r = self.post(route, {"model": model, "input": texts})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list" and body["model"] == model
        assert [row["index"] for row in body["data"]] == list(range(len(texts)))
        return body["data"]


def export(run: Path, out: Path, *flags: str) -> Path:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", str(run), "--to", "onnx", str(out), *flags]) == 0
    return out


@pytest.fixture(scope="module")
def world(tiny_model_dir: Path, ner_run: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A tiny BERT + LoRA classifier (32 steps at a high rate: enough for both labels and
    spread-out probabilities, so a parity check can fail; accuracy is not under test) exported
    fp32 and int8, the shared NER run exported fp32; the exports are loaded as `tunelab serve`
    loads targets, the two runs beside them as PyTorch encoders."""
    root = tmp_path_factory.mktemp("serve-onnx")
    tree = tiny_config(tiny_model_dir, toy_sentiment_files(root, dev=16), root / "cls",
                       max_steps=32, eval_every=32, checkpoint_every=32, lr=1e-1,
                       load_best_at_end=False)
    train(validate(tree), log=lambda _: None)
    exports = {"cls-onnx": export(root / "cls", root / "cls-onnx"),
               "cls-int8": export(root / "cls", root / "cls-int8", "--quantize", "int8"),
               "ner-onnx": export(ner_run, ner_run.parent / "ner-onnx")}
    served = load_targets([str(p) for p in exports.values()])
    assert set(served.encoders) == set(exports) and not served.engines
    served.encoders["cls"] = EncoderModel.from_run(root / "cls", "cls")
    served.encoders["ner"] = EncoderModel.from_run(ner_run, "ner")
    with live_server(create_app(served, None, ADMIN)) as url:
        yield World(url, exports)


def test_models_list_the_exports_with_their_backend(world: World) -> None:
    listed = httpx2.get(world.url + "/v1/models").json()["data"]
    cards = {m["id"]: {k: v for k, v in m.items() if k != "created"} for m in listed}
    tunelab = {"object": "model", "owned_by": "tunelab"}
    assert cards == {
        "cls-onnx": {"id": "cls-onnx", **tunelab, "backend": "onnxruntime",
                     "quantization": None, "file": "model.onnx"},
        "cls-int8": {"id": "cls-int8", **tunelab, "backend": "onnxruntime",
                     "quantization": "int8", "file": "model.int8.onnx"},
        "ner-onnx": {"id": "ner-onnx", **tunelab, "backend": "onnxruntime",
                     "quantization": None, "file": "model.onnx"},
        "cls": {"id": "cls", **tunelab}, "ner": {"id": "ner", **tunelab}}
    client = openai.OpenAI(base_url=world.url + "/v1", api_key="unused", max_retries=0)
    card = client.models.retrieve("cls-int8")
    assert card.id == "cls-int8" and card.model_extra == {"backend": "onnxruntime",
                                                          "quantization": "int8",
                                                          "file": "model.int8.onnx"}


def test_classify_equals_the_pytorch_served_run(world: World) -> None:
    ours = world.answer("/v1/classify", "cls", TEXTS)
    theirs = world.answer("/v1/classify", "cls-onnx", TEXTS)
    assert [r["label"] for r in theirs] == [r["label"] for r in ours]
    assert {r["label"] for r in ours} == {"0", "1"}  # not one answer for every text
    for got, want in zip(theirs, ours):
        assert set(got) == {"index", "label", "score", "probs"}
        assert got["score"] == pytest.approx(want["score"], abs=1e-4)
        assert got["probs"].keys() == want["probs"].keys() == {"0", "1"}
        assert list(got["probs"].values()) == pytest.approx(list(want["probs"].values()),
                                                            abs=1e-4)
        assert got["score"] == got["probs"][got["label"]]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(ours, theirs)) < 1e-4


def test_an_int8_export_is_served_from_its_int8_file(world: World) -> None:
    """The server's probabilities are model.int8.onnx's, not those of the fp32 model.onnx the
    int8 export also holds."""
    out = world.exports["cls-int8"]
    _, tokenizer, info = load_onnx_run(out)
    served = world.answer("/v1/classify", "cls-int8", TEXTS)
    got = [r["probs"]["1"] for r in served]
    int8 = [probs["1"] for _, _, probs in classify(OnnxModel(out / "model.int8.onnx"),
                                                   tokenizer, info, TEXTS)]
    fp32 = [probs["1"] for _, _, probs in classify(OnnxModel(out / "model.onnx"),
                                                   tokenizer, info, TEXTS)]
    assert got == pytest.approx(int8, abs=1e-6)
    assert max(abs(a - b) for a, b in zip(got, fp32)) > 1e-4  # quantization shows


def test_ner_entities_equal_the_pytorch_served_run(world: World) -> None:
    ours = world.answer("/v1/ner", "ner", NER_TEXTS)
    theirs = world.answer("/v1/ner", "ner-onnx", NER_TEXTS)
    spans = lambda rows: [[{k: e[k] for k in ("entity", "text", "start", "end")}
                           for e in row["entities"]] for row in rows]
    assert spans(theirs) == spans(ours) and sum(map(len, spans(ours))) >= 3
    scores = lambda rows: [e["score"] for row in rows for e in row["entities"]]
    assert scores(theirs) == pytest.approx(scores(ours), abs=1e-4)


def error_of(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def test_what_the_export_cannot_do_is_refused_by_name(world: World) -> None:
    onnx = "'cls-onnx' is a classification model (an ONNX export run by ONNX Runtime, fp32)"
    chat = error_of(world.post("/v1/chat/completions", {"model": "cls-onnx", "messages": USER}),
                    400)
    assert chat == {"message": f"{onnx}, it does not generate text; use POST /v1/classify",
                    "type": "invalid_request_error", "param": "model", "code": "wrong_route"}
    client = openai.OpenAI(base_url=world.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="int8\\), it does not generate text"):
        client.completions.create(model="cls-int8", prompt="hello")
    emb = error_of(world.post("/v1/embeddings", {"model": "ner-onnx", "input": "hi"}), 400)
    assert emb["param"] == "model" and emb["message"].startswith(
        "'ner-onnx' is a token_classification model (an ONNX export run by ONNX Runtime, fp32);"
        " its graph outputs only logits, so it cannot embed; use POST /v1/ner")
    wrong = error_of(world.post("/v1/ner", {"model": "cls-onnx", "input": "x"}), 400)
    assert wrong["message"] == f"{onnx}; use POST /v1/classify"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    base = error_of(world.post("/v1/adapters", {"name": "a", "path": "/x", "base": "cls-onnx"},
                               headers=admin), 400)
    assert base["message"] == f"{onnx}; adapters join generative base models only"
    as_adapter = error_of(world.post("/v1/adapters", {"name": "a", "path": str(
        world.exports["cls-onnx"])}, headers=admin), 400)
    assert as_adapter["code"] == "bad_adapter" and "is an ONNX export" in as_adapter["message"]
    assert world.answer("/v1/classify", "cls-onnx", ["still here"])[0]["label"] in ("0", "1")

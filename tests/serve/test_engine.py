"""The generation engine: per-row adapters in one batch give each adapter's own tokens,
the same as transformers' generate with that adapter alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from serve_fixtures import tiny_served

from tunelab.commands.generate import load_generator, render
from tunelab.errors import AdapterError
from tunelab.methods.row_lora import RowLoraLinear
from tunelab.models import load_causal_lm, load_tokenizer
from tunelab.serve.engine import Engine
from tunelab.serve.protocol import GenRequest, Overloaded, ServeError, UnknownModel
from tunelab.tasks.causal_lm import generate_text

PROMPTS = ["say one", "say fox", "hello world, how are you", "the sea"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    return tiny_served(tmp_path_factory.mktemp("serve"))


def engine_for(base: Path, adapters: dict[str, Path], **kw) -> Engine:
    engine = Engine(load_causal_lm(base), load_tokenizer(base), "base", **kw)
    for name, path in adapters.items():
        engine.add_adapter(name, path)
    return engine


def prompt_ids(tok, text: str) -> list[int]:
    rendered = render(tok, [{"role": "user", "content": text}])
    return tok(rendered, add_special_tokens=False)["input_ids"]


def run_all(engine: Engine, requests: list[GenRequest]) -> list[dict[int, tuple[str, list[int], str]]]:
    """Submit every request at once; each request's {choice: (text, token ids, finish)}."""
    async def one(req: GenRequest) -> dict[int, tuple[str, list[int], str]]:
        stream = engine.submit(req)
        out: dict[int, list] = {}
        async for ev in stream:
            text, ids, finish = out.setdefault(ev.index, ["", [], None])
            out[ev.index] = [text + ev.text, ids + ev.token_ids, ev.finish_reason or finish]
        return {k: tuple(v) for k, v in out.items()}

    async def main():
        return await asyncio.gather(*(one(r) for r in requests))

    engine.start()
    try:
        return asyncio.run(main())
    finally:
        engine.shutdown()


def reference(base: Path, adapter: Path | None, text: str, max_new: int) -> str:
    """tunelab generate's answer (transformers' generate) with one adapter, or the base."""
    model, tok = load_generator(str(base), [f"x={adapter}"] if adapter else None,
                                "x" if adapter else None)
    return generate_text(model, tok, render(tok, [{"role": "user", "content": text}]), max_new,
                         torch.device("cpu"))


def test_mixed_adapter_batch_matches_generate_per_adapter(served) -> None:
    base, adapters = served
    engine = engine_for(base, adapters)
    tok = engine.tokenizer
    models = ["base", *adapters]
    pairs = [(m, p) for m in models for p in PROMPTS[:2]]
    reqs = [GenRequest(m, prompt_ids(tok, p), max_tokens=12, temperature=0.0) for m, p in pairs]
    together = run_all(engine, reqs)
    texts: dict[str, tuple[str, ...]] = {}
    for (model, prompt), got in zip(pairs, together):
        assert got[0][0] == reference(base, adapters.get(model), prompt, 12), model
        texts[model] = texts.get(model, ()) + (got[0][0],)
    assert len(set(texts.values())) == len(models)  # four models, four different outputs
    # each alone (a batch of one) gives the same tokens as in the mixed batch
    for req, got in zip(reqs[::2], together[::2]):
        alone = run_all(engine_for(base, adapters), [req])[0]
        assert alone[0][1] == got[0][1]


def test_rows_of_the_base_model_skip_the_adapters(served) -> None:
    base, adapters = served
    engine = engine_for(base, adapters)
    layers = [m for m in engine.model.modules() if isinstance(m, RowLoraLinear)]
    assert layers and all(m.held for m in layers)
    engine.rows.choose([None, None])
    assert engine.rows.groups == []  # no adapter work at all in a base-only batch
    engine.rows.choose(["a1", None, "a1", "a2"])
    assert [(n, r.tolist()) for n, r in engine.rows.groups] == [("a1", [0, 2]), ("a2", [3])]


def test_sampling_seed_n_stop_and_logprobs(served) -> None:
    base, adapters = served
    engine = engine_for(base, adapters)
    ids = prompt_ids(engine.tokenizer, "say fox")
    req = GenRequest("a1", ids, max_tokens=10, temperature=1.0, top_p=0.9, seed=5, n=3,
                     logprobs=2)
    first, again = run_all(engine, [req, req])
    assert first == again and len(first) == 3  # same seed, same choices
    assert len({first[k][0] for k in first}) > 1  # n choices are drawn apart
    greedy = run_all(engine_for(base, adapters),
                     [GenRequest("a2", ids, max_tokens=10, temperature=0.0)])[0][0][0]
    stop = greedy[3:5]
    cut = run_all(engine_for(base, adapters),
                  [GenRequest("a2", ids, max_tokens=10, temperature=0.0, stop=[stop])])[0][0]
    assert cut[0] == greedy[: greedy.index(stop)] and cut[2] == "stop"


def test_logprobs_are_the_models(served) -> None:
    base, _ = served
    engine = engine_for(base, {})
    ids = prompt_ids(engine.tokenizer, "say one")
    got = []

    async def main():
        async for ev in engine.submit(GenRequest("base", ids, max_tokens=3, temperature=0.0,
                                                 logprobs=3)):
            got.extend(ev.logprobs)

    engine.start()
    asyncio.run(main())
    engine.shutdown()
    model = load_causal_lm(base)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    assert got[0].logprob == pytest.approx(float(want.max()), abs=1e-4)
    assert got[0].top[0][0] == got[0].token and len(got[0].top) == 3


def test_refusals(served) -> None:
    base, adapters = served
    engine = engine_for(base, {"a1": adapters["a1"]}, max_queue=2)

    async def main():
        with pytest.raises(UnknownModel, match="does not exist"):
            engine.submit(GenRequest("nope", [1, 2], max_tokens=4))
        with pytest.raises(ServeError, match="maximum context length is 256"):
            engine.submit(GenRequest("base", [1] * 250, max_tokens=10))
        engine.submit(GenRequest("base", [1, 2], max_tokens=4, n=2))  # not started: it waits
        with pytest.raises(Overloaded):
            engine.submit(GenRequest("base", [1, 2], max_tokens=4))

    asyncio.run(main())
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        engine.add_adapter("bad", base)
    with pytest.raises(ServeError, match="already served"):
        engine.add_adapter("a1", adapters["a1"])
    engine.remove_adapter("a1")
    assert engine.model_ids() == ["base"]

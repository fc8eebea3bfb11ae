"""`tunelab serve` over a real socket with the official `openai` client: a tiny Llama and two
LoRA adapters written by peft, plus three tiny BERT encoders. Each model id answers exactly
what `tunelab generate` prints with that adapter; streams join to the same text; encoders
answer what they compute in-process; every bad request is a 4xx OpenAI error object and the
server keeps answering."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx2
import openai
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from serve_fixtures import tiny_served
from server_fixtures import encoder_models, live_server, started

from tunelab.commands.generate import generate, load_generator, render
from tunelab.serve.app import create_app
from tunelab.serve.guard import Limits
from tunelab.serve.protocol import Event, Overloaded

KEY, ADMIN = "sk-test-key", "admin-key"
PROMPT = "say fox"
USER = [{"role": "user", "content": PROMPT}]


@dataclass
class World:
    base: Path
    adapters: dict[str, Path]
    served: Any
    url: str  # no API key, admin key ADMIN
    locked_url: str  # API key KEY, no admin key, --max-concurrent 1

    @property
    def engine(self) -> Any:  # the one engine: the base and its adapters
        return next(iter(self.served.engines.values()))

    @property
    def ids(self) -> list[str]:
        return self.engine.model_ids()

    def client(self, key: str = "unused", locked: bool = False) -> openai.OpenAI:
        return openai.OpenAI(base_url=(self.locked_url if locked else self.url) + "/v1",
                             api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[World]:
    from tunelab.serve.targets import load_targets

    root = tmp_path_factory.mktemp("serve-api")
    base, adapters = tiny_served(root)
    served = load_targets([str(base)], [f"{n}={adapters[n]}" for n in ("a1", "a2")])
    served.encoders.update(encoder_models(tiny_model_dir, root))
    with started(served), \
            live_server(create_app(served, None, ADMIN)) as url, \
            live_server(create_app(served, KEY, None, Limits(max_concurrent=1))) as locked_url:
        yield World(base, adapters, served, url, locked_url)


def reference(world: World, model: str, max_new: int) -> tuple[str, int]:
    """(what `tunelab generate` prints, how many tokens transformers generated) for `model`."""
    use = "base" if model == world.ids[0] else model
    extra = [f"{n}={world.adapters[n]}" for n in ("a1", "a2")]
    text = generate(str(world.base), PROMPT, None, None, None, max_new, 0.0, extra, use)[0]
    hf, tok = load_generator(str(world.base), extra, use)
    enc = tok(render(tok, USER), return_tensors="pt", add_special_tokens=False)
    out = hf.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
    return text, out.shape[1] - enc["input_ids"].shape[1]


def error_of(response: httpx2.Response, status: int) -> dict[str, Any]:
    """The OpenAI error object of a refused request, with its four keys."""
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def still_answers(world: World) -> None:
    assert httpx2.get(world.url + "/health").json() == {"status": "ok"}
    r = world.client().chat.completions.create(model="a1", messages=USER, max_tokens=2,
                                               temperature=0)
    assert r.usage.completion_tokens >= 1


def test_models_lists_the_base_and_every_adapter(world: World) -> None:
    listed = world.client().models.list()
    assert [m.id for m in listed.data] == [*world.ids, "emb", "cls", "ner"]
    assert world.ids[1:] == ["a1", "a2"]
    assert {(m.object, m.owned_by) for m in listed.data} == {("model", "tunelab")}
    assert world.client().models.retrieve("a2").id == "a2"
    with pytest.raises(openai.NotFoundError):
        world.client().models.retrieve("nope")


def test_each_model_id_answers_what_tunelab_generate_prints(world: World) -> None:
    tok = world.engine.tokenizer
    prompt_tokens = len(tok(render(tok, USER), add_special_tokens=False)["input_ids"])
    answers = {}
    for model in world.ids:
        want, generated = reference(world, model, 12)
        r = world.client().chat.completions.create(model=model, messages=USER, max_tokens=12,
                                                   temperature=0)
        assert r.choices[0].message.content == want and r.choices[0].message.role == "assistant"
        assert r.object == "chat.completion" and r.model == model
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt_tokens, generated)
        assert r.usage.total_tokens == prompt_tokens + generated
        assert r.choices[0].finish_reason == ("length" if generated == 12 else "stop")
        answers[model] = want
    assert len(set(answers.values())) == 3  # the adapters change what the base says


def test_raw_completion_matches_generate_text_with_special_tokens(world: World) -> None:
    from tunelab.tasks.causal_lm import generate_text

    model, tok = load_generator(str(world.base), [f"a2={world.adapters['a2']}"], "a2")
    want = generate_text(model, tok, "the sea", 10, torch.device("cpu"), special_tokens=True)
    r = world.client().completions.create(model="a2", prompt="the sea", max_tokens=10,
                                          temperature=0)
    assert r.choices[0].text == want and r.object == "text_completion"
    assert r.usage.prompt_tokens == len(tok("the sea")["input_ids"])
    ids = tok("the sea")["input_ids"]  # token ids are a prompt too, as OpenAI allows
    assert world.client().completions.create(model="a2", prompt=ids, max_tokens=10,
                                             temperature=0).choices[0].text == want


def test_stream_joins_to_the_same_text_with_usage_last(world: World) -> None:
    args: dict[str, Any] = {"model": "a1", "messages": USER, "max_tokens": 12, "temperature": 0}
    whole = world.client().chat.completions.create(**args)
    chunks = list(world.client().chat.completions.create(
        **args, stream=True, stream_options={"include_usage": True}))
    first = chunks[0].choices[0].delta
    assert (first.role, first.content) == ("assistant", "")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    # the bytes on the wire: server-sent events, each a JSON chunk, then [DONE]
    with httpx2.stream("POST", world.url + "/v1/completions", json={
            "model": "a2", "prompt": "the sea", "max_tokens": 10, "temperature": 0,
            "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(r.iter_bytes()).decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""] and all(e.startswith("data: ") for e in events[:-1])
    texts = [json.loads(e[6:])["choices"][0]["text"] for e in events[:-2]]
    plain = world.client().completions.create(model="a2", prompt="the sea", max_tokens=10,
                                              temperature=0)
    assert "".join(texts) == plain.choices[0].text


def test_n_choices_and_seed(world: World) -> None:
    args: dict[str, Any] = {"model": "a2", "messages": USER, "max_tokens": 8, "temperature": 1.0,
                            "n": 2, "seed": 1234}
    first = world.client().chat.completions.create(**args)
    again = world.client().chat.completions.create(**args)
    assert [c.index for c in first.choices] == [0, 1]
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices] and texts[0] != texts[1]
    if all(c.finish_reason == "length" for c in first.choices):
        assert first.usage.completion_tokens == 16


def test_stop_cuts_the_text_before_the_stop_string(world: World) -> None:
    full = world.client().chat.completions.create(model="a1", messages=USER, max_tokens=16,
                                                  temperature=0).choices[0].message.content
    at = next(i for i in range(3, len(full) - 1) if "\ufffd" not in full[i:i + 2])
    stop = full[at:at + 2]
    cut = world.client().chat.completions.create(model="a1", messages=USER, max_tokens=16,
                                                 temperature=0, stop=[stop, "never-said"])
    assert cut.choices[0].message.content == full[:full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_logprobs_chat_and_legacy(world: World) -> None:
    r = world.client().chat.completions.create(model="a1", messages=USER, max_tokens=6,
                                               temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert len(t.top_logprobs) == 3 and t.bytes == list(t.token.encode())
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob)  # greedy: the best token
        assert [x.logprob for x in t.top_logprobs] == sorted((x.logprob for x in t.top_logprobs),
                                                            reverse=True)
        assert -20 < t.logprob < 0
    legacy = world.client().completions.create(model="a2", prompt="the sea", max_tokens=5,
                                               temperature=0, logprobs=2).choices[0].logprobs
    assert len(legacy.tokens) == len(legacy.token_logprobs) == len(legacy.top_logprobs) == 5
    assert all(1 <= len(top) <= 2 and max(top.values()) == pytest.approx(lp)
               for top, lp in zip(legacy.top_logprobs, legacy.token_logprobs))
    starts = [len("the sea")]
    for token in legacy.tokens[:-1]:
        starts.append(starts[-1] + len(token))
    assert legacy.text_offset == starts


BAD_BODIES = [  # (body, status, param)
    ({"model": "nope", "messages": USER}, 404, "model"),
    ({"model": "a1", "messages": [{"role": "user", "content": "fox " * 300}]}, 400, "messages"),
    ({"model": "a1", "messages": USER, "max_tokens": 250}, 400, "messages"),
    ({"model": "a1", "messages": USER, "temperature": -1}, 400, "temperature"),
    ({"model": "a1", "messages": USER, "temperature": "hot"}, 400, "temperature"),
    ({"model": "a1", "messages": USER, "top_p": 0}, 400, "top_p"),
    ({"model": "a1", "messages": USER, "max_tokens": -5}, 400, "max_tokens"),
    ({"model": "a1", "messages": USER, "n": 0}, 400, "n"),
    ({"model": "a1", "messages": USER, "n": 17}, 400, "n"),
    ({"model": "a1", "messages": USER, "top_logprobs": 2}, 400, "top_logprobs"),
    ({"model": "a1", "messages": USER, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
    ({"model": "a1", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": "a1", "messages": USER, "tools": [{"type": "function"}]}, 400, "tools"),
    ({"model": "a1", "messages": USER, "frequency_penalty": 0.5}, 400, "frequency_penalty"),
    ({"model": "a1", "messages": USER, "stream_options": {"include_usage": True}}, 400,
     "stream_options"),
    ({"model": "a1", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages[0].content"),
    ({"model": "a1", "messages": []}, 400, "messages"),
    ({"messages": USER}, 400, "model"),
]


@pytest.mark.parametrize("body,status,param", BAD_BODIES, ids=[p or "x" for _, _, p in BAD_BODIES])
def test_bad_chat_requests_are_4xx_error_objects(world: World, body, status, param) -> None:
    err = error_of(httpx2.post(world.url + "/v1/chat/completions", json=body), status)
    assert err["param"] == param and err["type"] in ("invalid_request_error", "not_found_error")


def test_bad_requests_of_other_kinds(world: World) -> None:
    post = lambda path, **kw: httpx2.post(world.url + path, **kw)
    cut_short = post("/v1/chat/completions", content=b'{"model": ')
    assert "not valid JSON" in error_of(cut_short, 400)["message"]
    assert error_of(post("/v1/chat/completions", content=b"[1, 2]"), 400)["message"] == \
        "the body must be a JSON object"
    big = {"model": "a1", "messages": [{"role": "user", "content": "x" * (1 << 20)}]}
    assert error_of(post("/v1/chat/completions", json=big), 413)["code"] == "body_too_large"
    chunked = (b"x" * 65536 for _ in range(20))  # no Content-Length: counted as it arrives
    error_of(post("/v1/chat/completions", content=chunked), 413)
    for body, param in (({"model": "a1", "prompt": "hi", "echo": True}, "echo"),
                        ({"model": "a1", "prompt": ["a", "b"]}, "prompt"),
                        ({"model": "a1", "prompt": [10 ** 6]}, "prompt"),
                        ({"model": "a1", "prompt": "hi", "best_of": 3}, "best_of"),
                        ({"model": "a1", "prompt": "fox " * 300}, "prompt")):
        assert error_of(post("/v1/completions", json=body), 400)["param"] == param
    err = error_of(post("/v1/embeddings", json={"model": "a1", "input": "hi"}), 400)
    assert "/v1/chat/completions" in err["message"] and err["code"] == "wrong_route"
    assert error_of(httpx2.get(world.url + "/v1/nothing"), 404)["code"] == "not_found"
    future = {"model": "a1", "messages": USER, "max_tokens": 2, "a_field_from_the_future": 1}
    assert post("/v1/chat/completions", json=future).status_code == 200  # ignored, as OpenAI does
    with pytest.raises(openai.BadRequestError) as caught:  # the client reads our error object
        world.client().chat.completions.create(model="a1", messages=USER, temperature=3)
    assert caught.value.status_code == 400 and caught.value.param == "temperature"
    still_answers(world)


def test_a_model_without_chat_template_is_refused_by_name(world: World, monkeypatch) -> None:
    monkeypatch.setattr(world.engine.tokenizer, "chat_template", None)
    err = error_of(httpx2.post(world.url + "/v1/chat/completions",
                               json={"model": "a2", "messages": USER}), 400)
    assert "'a2' has no chat template" in err["message"] and err["code"] == "no_chat_template"
    r = world.client().completions.create(model="a2", prompt="the sea", max_tokens=2)
    assert r.usage.completion_tokens == 2  # raw prompts still work


def test_api_key_is_required_when_set_and_not_otherwise(world: World) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                             ("GET", "/metrics"), ("GET", "/v1/nothing")):
            r = httpx2.request(method, world.locked_url + path, headers=headers, json={})
            assert error_of(r, 401)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        world.client("wrong", locked=True).models.list()
    assert httpx2.get(world.locked_url + "/health").json() == {"status": "ok"}
    r = world.client(KEY, locked=True).chat.completions.create(model="a2", messages=USER,
                                                               max_tokens=3, temperature=0)
    assert r.usage.completion_tokens >= 1
    with_key = {"Authorization": f"Bearer {KEY}"}
    assert httpx2.get(world.locked_url + "/metrics", headers=with_key).status_code == 200
    # without --api-key any key, or none, is let in
    assert httpx2.get(world.url + "/v1/models").status_code == 200
    assert world.client("whatever").models.list().data[0].id == world.ids[0]


def test_admin_adds_and_removes_adapters_at_run_time(world: World) -> None:
    body = {"name": "a3", "path": str(world.adapters["a3"])}
    def add(key: str | None = ADMIN, url: str = world.url, **kw: str) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx2.post(url + "/v1/adapters", json={**body, **kw}, headers=headers)

    assert error_of(add(None), 401)["code"] == "invalid_api_key"
    assert error_of(add("wrong"), 403)["code"] == "invalid_api_key"
    off = error_of(add(KEY, world.locked_url), 403)  # the locked server has no admin key
    assert "--admin-key" in off["message"]
    assert error_of(add(path=str(world.base)), 400)["param"] == "path"  # a model, not an adapter
    assert add().json()["id"] == "a3"
    assert "a3" in [m.id for m in world.client().models.list().data]
    assert error_of(add(), 409)["param"] == "name"
    a3 = world.client().chat.completions.create(model="a3", messages=USER, max_tokens=12,
                                                temperature=0).choices[0].message.content
    assert a3 == reference_a3(world)
    def delete(name: str, key: str = ADMIN) -> httpx2.Response:
        return httpx2.delete(f"{world.url}/v1/adapters/{name}",
                             headers={"Authorization": f"Bearer {key}"})

    assert delete("a3").json() == {"id": "a3", "object": "model", "deleted": True}
    assert "a3" not in [m.id for m in world.client().models.list().data]
    error_of(delete("a3"), 404)
    error_of(delete(world.ids[0]), 400)  # the base stays
    error_of(delete("a1", "wrong"), 403)
    with pytest.raises(openai.NotFoundError):
        world.client().chat.completions.create(model="a3", messages=USER, max_tokens=2)
    still_answers(world)


def reference_a3(world: World) -> str:
    return generate(str(world.base), PROMPT, None, None, None, 12, 0.0,
                    [f"a3={world.adapters['a3']}"], "a3")[0]


def test_too_many_concurrent_requests_is_429(world: World) -> None:
    """The locked server takes one request at a time: one that is still sending its body
    holds the slot, a second is refused with 429; the first then completes."""
    body = json.dumps({"model": "a1", "messages": USER, "max_tokens": 2, "temperature": 0}).encode()
    port = int(world.locked_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nAuthorization: Bearer " + KEY.encode() +
                     b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
        time.sleep(0.3)
        with pytest.raises(openai.RateLimitError) as caught:
            world.client(KEY, locked=True).chat.completions.create(model="a1", messages=USER)
        assert caught.value.body["type"] == "rate_limit_error"
        slow.sendall(body[10:])
        slow.settimeout(30)
        reply = b""
        while b'"completion_tokens"' not in reply and (part := slow.recv(65536)):
            reply += part
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 200") and '"completion_tokens"' in reply
    assert world.client(KEY, locked=True).models.list().data


def test_engine_overload_is_429_and_a_crash_is_500(world: World, monkeypatch) -> None:
    def full(req):
        raise Overloaded("300 sequences are waiting; retry later", code="queue_full")

    monkeypatch.setattr(world.engine, "submit", full)
    with pytest.raises(openai.RateLimitError) as caught:
        world.client().chat.completions.create(model="a1", messages=USER)
    assert caught.value.code == "queue_full"

    def broken(req):
        raise RuntimeError("boom")

    monkeypatch.setattr(world.engine, "submit", broken)
    err = error_of(httpx2.post(world.url + "/v1/chat/completions",
                               json={"model": "a1", "messages": USER}), 500)
    assert err["type"] == "server_error" and "boom" not in err["message"]

    class BreaksMidway:  # headers are sent by then: the error goes out as an event
        prompt_tokens = 3

        async def __aiter__(self):
            yield Event(0, "fine so far", [5])
            raise RuntimeError("boom")

        def cancel(self) -> None:
            pass

    monkeypatch.setattr(world.engine, "submit", lambda req: BreaksMidway())
    with pytest.raises(openai.APIError, match="internal server error"):
        list(world.client().chat.completions.create(model="a1", messages=USER, stream=True))
    monkeypatch.undo()
    still_answers(world)


class Watched:
    """An engine stream that records whether it was cancelled before its last event."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.prompt_tokens = inner, inner.prompt_tokens
        self.ended, self.cancelled_early = False, None

    async def __aiter__(self):
        async for event in self.inner:
            yield event
        self.ended = True

    def cancel(self) -> None:
        if self.cancelled_early is None:
            self.cancelled_early = not self.ended
        self.inner.cancel()


def test_a_client_that_leaves_mid_stream_frees_its_slot(world: World, monkeypatch) -> None:
    seen: list[Watched] = []
    real_submit = world.engine.submit
    monkeypatch.setattr(world.engine, "submit",
                        lambda req: seen.append(Watched(real_submit(req))) or seen[-1])
    with httpx2.stream("POST", world.url + "/v1/chat/completions", json={
            "model": "a2", "messages": USER, "max_tokens": 200, "temperature": 0,
            "stream": True}) as r:
        lines = (line for line in r.iter_lines() if '"content":"' in line and '""' not in line)
        assert next(lines).startswith("data: ")  # the first generated text arrived
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (seen[0].cancelled_early is None
                                           or world.engine.running()):
        time.sleep(0.01)
    assert seen[0].cancelled_early is True  # cancelled while it still had tokens to make
    assert world.engine.running() == 0 and world.engine.queue_depth() == 0
    still_answers(world)


def test_metrics_count_requests_tokens_and_latency(world: World) -> None:
    def scrape() -> dict[tuple[str, tuple], float]:
        text = httpx2.get(world.url + "/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    before = scrape()
    r = world.client().chat.completions.create(model="a1", messages=USER, max_tokens=5,
                                               temperature=0)
    after = scrape()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("tunelab_requests_total", route="/v1/chat/completions", status="200") == 1
    assert grew("tunelab_prompt_tokens_total", model="a1") == r.usage.prompt_tokens
    assert grew("tunelab_completion_tokens_total", model="a1") == r.usage.completion_tokens
    assert grew("tunelab_time_to_first_token_seconds_count", model="a1") == 1
    assert grew("tunelab_request_latency_seconds_count", route="/v1/chat/completions") == 1
    assert after[("tunelab_queue_depth", ())] == 0
    # the locked server counts in its own registry
    locked = httpx2.get(world.locked_url + "/metrics",
                        headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'route="/v1/chat/completions",status="200"' in locked


def test_the_serve_command_binds_this_machine_and_reads_keys_from_the_environment(
        world: World, monkeypatch, capsys) -> None:
    import asyncio

    import uvicorn

    from tunelab.cli import main

    seen: dict[str, Any] = {}

    async def ask(app: Any) -> list[httpx2.Response]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as c:
            return [await c.get("/v1/models"),
                    await c.get("/v1/models", headers={"Authorization": "Bearer env-key"})]

    def run_once(server: uvicorn.Server, sockets: Any = None) -> None:  # instead of serving forever
        seen["config"], seen["answers"] = server.config, asyncio.run(ask(server.config.app))

    monkeypatch.setattr(uvicorn.Server, "run", run_once)
    monkeypatch.setenv("TUNELAB_API_KEY", "env-key")
    assert main(["serve", str(world.base), "--adapter", f"mine={world.adapters['a2']}",
                 "--port", "8123", "--max-batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/v1" in out and "mine" in out and "API key required" in out
    assert (seen["config"].host, seen["config"].port) == ("127.0.0.1", 8123)
    refused, allowed = seen["answers"]
    assert refused.status_code == 401 and allowed.status_code == 200
    assert [m["id"] for m in allowed.json()["data"]][1:] == ["mine"]
    assert main(["serve", str(world.base), "--port", "70000"]) == 2  # refused before loading
    assert "--port 70000" in capsys.readouterr().err


TEXTS = ["the movie was good", "Paris is in France"]


def test_encoders_answer_what_they_compute_in_process(world: World) -> None:
    emb, cls, ner = (world.served.encoders[m] for m in ("emb", "cls", "ner"))
    vectors, tokens = emb.embed(TEXTS)
    got = world.client().embeddings.create(model="emb", input=TEXTS)  # the client asks base64
    assert [d.index for d in got.data] == [0, 1] and got.usage.prompt_tokens == tokens
    for d, want in zip(got.data, vectors):
        assert d.embedding == pytest.approx(want, abs=1e-6)  # float32 on the wire
    floats = httpx2.post(world.url + "/v1/embeddings", json={"model": "cls", "input": TEXTS[0],
                                                             "encoding_format": "float"}).json()
    assert floats["data"][0]["embedding"] == cls.embed(TEXTS[:1])[0][0]  # every encoder embeds
    labels = httpx2.post(world.url + "/v1/classify", json={"model": "cls", "input": TEXTS}).json()
    assert labels == {"object": "list", "model": "cls",
                      "data": [{"index": i, **row} for i, row in enumerate(cls.classify(TEXTS))]}
    assert all(sum(d["probs"].values()) == pytest.approx(1) for d in labels["data"])
    spans = httpx2.post(world.url + "/v1/ner", json={"model": "ner", "input": TEXTS}).json()
    assert spans == {"object": "list", "model": "ner",
                     "data": [{"index": i, "entities": e} for i, e in enumerate(ner.ner(TEXTS))]}


@pytest.mark.parametrize("route,body,status,says", [
    ("/v1/ner", {"model": "cls", "input": "x"}, 400, "/v1/classify"),
    ("/v1/classify", {"model": "ner", "input": "x"}, 400, "/v1/ner"),
    ("/v1/classify", {"model": "emb", "input": "x"}, 400, "/v1/embeddings"),
    ("/v1/chat/completions", {"model": "cls", "messages": USER}, 400, "/v1/classify"),
    ("/v1/classify", {"model": "cls", "input": ["fine", "  "]}, 400, "input 1 is empty"),
    ("/v1/classify", {"model": "cls", "input": []}, 400, "at least one text"),
    ("/v1/classify", {"model": "cls", "input": "x", "encoding_format": "base64"}, 400,
     "encoding_format"),
    ("/v1/embeddings", {"model": "emb", "input": "x", "dimensions": 8}, 400, "dimensions"),
    ("/v1/embeddings", {"model": "nope", "input": "x"}, 404, "GET /v1/models"),
], ids=["ner-of-cls", "classify-of-ner", "classify-of-emb", "chat-of-cls", "empty-text",
        "no-texts", "encoding-format", "dimensions", "unknown"])
def test_encoder_refusals(world: World, route: str, body: dict, status: int, says: str) -> None:
    assert says in error_of(httpx2.post(world.url + route, json=body), status)["message"]

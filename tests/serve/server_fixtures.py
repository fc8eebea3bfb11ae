"""A live `tunelab serve` for tests: the real app on a real socket (uvicorn in a background
thread on a free 127.0.0.1 port), and the engines started around it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve `app` until the block ends; yields the base URL (http://127.0.0.1:PORT)."""
    import httpx2
    import uvicorn

    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not answer /health within 20 s")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def started(served: Any) -> Iterator[Any]:
    """Start every engine of `served` and shut them down when the block ends."""
    engines = list({id(e): e for e in served.engines.values()}.values())
    for engine in engines:
        engine.start()
    try:
        yield served
    finally:
        for engine in engines:
            engine.shutdown()


def encoder_models(model_dir: Path, root: Path) -> dict[str, Any]:
    """Three served encoders on the tiny BERT at `model_dir`: the bare model for embeddings,
    a LoRA classification run and a full NER run (a few steps each: the HTTP layer, not
    learning, is under test)."""
    from conftest import synthetic_rows, tiny_config
    from ner_fixtures import ner_config, toy_ner_files

    from tunelab.config import validate
    from tunelab.recipes.run import train
    from tunelab.serve.encoders import EncoderModel

    data = {}
    for split, n, seed in (("train", 32, 1), ("dev", 8, 2)):
        data[split] = root / f"{split}.tsv"
        data[split].write_text("\n".join(["sentence\tlabel"] + [f"{t}\t{y}" for t, y in
                                                              synthetic_rows(n, seed)]) + "\n")
    steps = {"max_steps": 4, "eval_every": 4, "checkpoint_every": 4}
    train(validate(tiny_config(model_dir, data, root / "cls", load_best_at_end=False, **steps)),
          log=lambda _: None)
    train(validate(ner_config(model_dir, toy_ner_files(root), root / "ner", **steps)),
          log=lambda _: None)
    return {"emb": EncoderModel.from_base(model_dir, "emb"),
            "cls": EncoderModel.from_run(root / "cls", "cls"),
            "ner": EncoderModel.from_run(root / "ner", "ner")}

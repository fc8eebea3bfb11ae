"""Flower's deployment engine on 127.0.0.1: a SuperLink, two SuperNode client processes, a run
submitted by `tunelab federate --superlink`; 2 rounds, and the global adapter loads in peft."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from conftest import tiny_config
from safetensors.torch import load_file

from tunelab.commands.federate import federate

BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_open(port: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def test_superlink_and_two_supernodes_finish_two_rounds(tiny_model_dir: Path, tiny_data: dict,
                                                       tmp_path: Path) -> None:
    tree = copy.deepcopy(tiny_config(tiny_model_dir, tiny_data, tmp_path / "run"))
    tree["federated"] = {"clients": 2, "rounds": 2, "local_steps": 2, "client_scores": False}
    config = tmp_path / "fed.yaml"
    config.write_text(yaml.safe_dump(tree))
    link = _port()
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr"),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    procs = []
    try:
        cmds = [[str(BIN / "flower-superlink"), "--insecure", "--port", str(link)]] + [
            [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
             "--port", str(_port()), "--node-config", f"partition-id={k}"] for k in (0, 1)]
        for i, cmd in enumerate(cmds):
            with open(tmp_path / f"proc{i}.log", "w") as log:  # the child keeps its own copy
                procs.append(subprocess.Popen(cmd, env=env, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        _wait_open(link, 60)
        federate(str(config), superlink=f"127.0.0.1:{link}")
    finally:
        for p in procs:  # each started its own session: end it and whatever it spawned
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2]
    assert all(r["clients_trained"] == 2 for r in records[1:])
    assert sorted(c["client"] for c in records[-1]["clients"]) == [0, 1]

    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    model = PeftModel.from_pretrained(base, run / "adapter")
    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    loaded = dict(model.named_parameters())
    lora = [k for k in saved if "lora_A" in k]
    assert lora
    for key in lora:
        name = next(n for n in loaded if n.endswith(key.removeprefix("base_model.model.")
                                                    .replace(".weight", ".default.weight")))
        torch.testing.assert_close(loaded[name].detach(), saved[key])

"""The UI's JSON API in-process: the form validated with tunelab's own messages, the data
preview, uploads that cannot escape or overflow, login, and errors without stack traces."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from conftest import toy_sentiment_files
from fastapi.testclient import TestClient
from ui_fixtures import form

from tunelab.commands.ui import build, ui
from tunelab.errors import ConfigError
from tunelab.ui.app import Services, create_app


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Path]:
    return toy_sentiment_files(tmp_path)


def test_form_becomes_the_config_it_will_run(tmp_path, tiny_model_dir, data):
    client = TestClient(build(tmp_path / "runs"))
    r = client.post("/api/config", json=form(tiny_model_dir, data, "r1", 12)).json()
    assert r["valid"] and r["error"] is None
    import yaml

    cfg = yaml.safe_load(r["yaml"])
    assert cfg["output_dir"] == str((tmp_path / "runs" / "r1").resolve())
    assert (cfg["train"]["max_steps"], cfg["train"]["lr"], cfg["method"]["r"]) == (12, 5e-3, 4)
    assert cfg["data"]["columns"]["text"] == "sentence"


def test_bad_values_show_tunelab_config_errors(tmp_path, tiny_model_dir, data):
    client = TestClient(build(tmp_path / "runs"))
    bad = form(tiny_model_dir, data, "r1", 12, lr="fast")
    r = client.post("/api/config", json=bad).json()
    assert not r["valid"] and "train.lr" in r["error"] and "'fast'" in r["error"]
    assert "lr: fast" in r["yaml"]  # the tree as typed, so the user sees what is wrong
    typo = {**form(tiny_model_dir, data, "r1", 12), "method_options": "rr=4"}
    r = client.post("/api/config", json=typo).json()
    assert "unknown key 'method.rr' (did you mean 'method.r'?)" in r["error"]
    started = client.post("/api/runs", json=typo)
    assert started.status_code == 400 and "did you mean 'method.r'" in started.json()["error"]
    assert "Traceback" not in started.text
    assert not (tmp_path / "runs" / "r1").exists()
    for name in ("../evil", "a/b", ".hidden", ""):
        r = client.post("/api/config", json={**form(tiny_model_dir, data, name, 12)}).json()
        assert not r["valid"] and "run name" in r["error"]


def test_preview_shows_the_examples(tmp_path, tiny_model_dir, data):
    client = TestClient(build(tmp_path / "runs"))
    r = client.post("/api/preview", json={**form(tiny_model_dir, data, "r1", 12), "n": 2})
    assert r.status_code == 200
    lines = data["train"].read_text().splitlines()[1:]
    counts = {y: sum(1 for ln in lines if ln.endswith("\t" + y)) for y in ("0", "1")}
    assert f"train: {len(lines)} examples; 0: {counts['0']}, 1: {counts['1']}" in r.json()["text"]


def test_uploads_stay_in_the_uploads_folder_and_under_the_limit(tmp_path):
    runs = tmp_path / "runs"
    client = TestClient(create_app(runs, max_upload_bytes=100))
    ok = client.put("/api/upload/train.tsv", content=b"sentence\tlabel\ngood\t1\n")
    assert ok.status_code == 200 and ok.json()["bytes"] == 22
    assert (runs / "uploads" / "train.tsv").read_bytes() == b"sentence\tlabel\ngood\t1\n"
    for name in ("..train.tsv", ".env.tsv", "x.py", "a%2F..%2F..%2Fescape.tsv"):
        r = client.put(f"/api/upload/{name}", content=b"x")
        assert r.status_code in (400, 404), name
    too_big = client.put("/api/upload/big.tsv", content=b"x" * 101)
    assert too_big.status_code == 400 and "limit of 100 bytes" in too_big.json()["error"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["train.tsv"]


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("secret,header,wrong", [
    ("alice:s3cret-pass", _basic("alice:s3cret-pass"), _basic("alice:s3cret-pasS")),
    ("tok-12345678", "Bearer tok-12345678", "Bearer tok-12345679"),
    ("tok-12345678", _basic("anyone:tok-12345678"), _basic("anyone:tok-1234567"))])
def test_auth_guards_every_route(tmp_path, secret, header, wrong):
    client = TestClient(build(tmp_path / "runs", auth=secret))
    for path in ("/", "/api/runs", "/static/app.js"):
        r = client.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert client.get(path, headers={"Authorization": wrong}).status_code == 401
        assert client.get(path, headers={"Authorization": header}).status_code == 200


def test_exposed_host_needs_auth(tmp_path):
    with pytest.raises(ConfigError, match="needs --auth"):
        ui("0.0.0.0", 0, tmp_path / "runs")
    with pytest.raises(ConfigError, match="8 characters"):
        build(tmp_path / "runs", auth="a:b")


def test_unexpected_errors_are_one_line(tmp_path, tiny_model_dir, data):
    def broken(cfg, n):
        raise RuntimeError("secret internals")

    client = TestClient(create_app(tmp_path / "runs", Services(preview=broken)),
                        raise_server_exceptions=False)
    r = client.post("/api/preview", json=form(tiny_model_dir, data, "r1", 12))
    assert r.status_code == 500 and r.json() == {
        "error": "internal error (RuntimeError); see the ui's log"}


def test_unknown_runs_and_actions(tmp_path):
    client = TestClient(build(tmp_path / "runs"))
    assert client.get("/api/runs").json() == {"runs": []}
    assert client.get("/api/runs/nope").status_code == 404
    assert client.post("/api/runs/nope/stop").status_code == 404
    assert "two or more" in client.get("/api/compare?run=x").json()["error"] or \
        client.get("/api/compare?run=x").status_code == 404


def test_options_list_tasks_methods_models_catalog_and_files(tmp_path):
    from tunelab.config.run import TASKS
    from tunelab.data.catalog import CATALOG
    from tunelab.methods import METHODS
    from tunelab.models import PACKAGED

    data_dir = tmp_path / "data"
    (data_dir / "mine").mkdir(parents=True)
    (data_dir / "mine" / "train.tsv").write_text("a\tb\n")
    (data_dir / "mine" / "notes.md").write_text("not data\n")
    client = TestClient(create_app(tmp_path / "runs", data_dir=data_dir))
    client.put("/api/upload/up.jsonl", content=b"{}\n")
    o = client.get("/api/options").json()
    assert o["tasks"] == list(TASKS) and o["methods"] == sorted(METHODS)
    assert o["models"] == sorted(PACKAGED) and o["data"] == sorted(CATALOG)
    assert o["files"] == sorted([str(data_dir / "mine" / "train.tsv"),
                                 str((tmp_path / "runs").resolve() / "uploads" / "up.jsonl")])

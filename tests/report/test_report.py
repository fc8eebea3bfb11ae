"""`tunelab report`: pages whose tables hold the run's own numbers (summary.json,
metrics.jsonl, samples, translations, dev predictions), comparisons holding every run, and a
headless-Chromium render of a page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import synthetic_rows, tiny_config
from ner_fixtures import ner_config, toy_ner_files
from report_pages import html_page, markdown_tables, table
from tunelab.cli import main
from tunelab.config import validate
from tunelab.recipes.run import train


def quiet(_: str) -> None:
    pass


def f4(x: float) -> str:
    return f"{x:.4f}"


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return path


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cls-data")
    return {"train": write_tsv(root / "train.tsv", synthetic_rows(96, 1)),
            "dev": write_tsv(root / "dev.tsv", synthetic_rows(32, 2))}


@pytest.fixture(scope="module")
def cls_run(tiny_model_dir, cls_data, tmp_path_factory) -> Path:
    """A tiny BERT fully fine-tuned on the toy sentiment set (it learns it, see test_cli), with
    dev evaluations at steps 0, 32, 64 and 96."""
    root = tmp_path_factory.mktemp("cls-a")
    tree = tiny_config(tiny_model_dir, cls_data, root / "run", max_steps=96, eval_every=32, lr=3e-3)
    tree["method"] = {"name": "full"}
    train(validate(tree), log=quiet)
    return root / "run"


def test_classification_page_shows_the_runs_numbers(cls_run, cls_data, capsys):
    assert main(["report", str(cls_run), "--samples", "5"]) == 0
    out = cls_run / "report"
    assert capsys.readouterr().out == (f"wrote {out / 'report.html'} (self-contained) and "
                                       f"{out / 'report.md'} with 1 PNG figure(s)\n")
    page = html_page(out / "report.html")
    summary = json.loads((cls_run / "summary.json").read_text())

    metrics = table(page, "final-metrics")
    assert metrics["header"] == ["metric", "dev before training",
                                 f"dev best (step {summary['best']['step']})", "dev after training"]
    for name in ("loss", "accuracy", "macro_f1"):
        assert metrics[name][0] == f4(summary["initial_dev"][name])
        assert metrics[name][2] == f4(summary["final_dev"][name])

    dev = [r for r in jsonl(cls_run / "metrics.jsonl") if r.get("split") == "dev"]
    evals = page.tables["dev-evaluations"]
    assert evals[0] == ["step", "loss", "accuracy", "macro_f1"]
    assert evals[1:] == [[str(r["step"]), f4(r["loss"]), f4(r["accuracy"]), f4(r["macro_f1"])]
                         for r in dev]
    assert [r["step"] for r in dev] == [0, 32, 64, 96]

    conf = table(page, "confusion")
    assert conf["header"] == ["gold \\ predicted", "0", "1"]
    matrix = [[int(v) for v in conf[label]] for label in ("0", "1")]
    assert sum(map(sum, matrix)) == 32  # the dev set
    assert [sum(row) for row in matrix] == [16, 16]  # gold counts per label
    assert f4((matrix[0][0] + matrix[1][1]) / 32) == f4(summary["final_dev"]["accuracy"])
    assert matrix[0][0] + matrix[1][1] >= 24  # it learned: both columns are used

    per_class = table(page, "per-class")
    assert per_class["macro average"][2:] == [f4(summary["final_dev"]["macro_f1"]), "32"]
    assert [per_class[label][3] for label in ("0", "1")] == ["16", "16"]
    recall = [matrix[0][0] / 16, matrix[1][1] / 16]
    precision = [matrix[0][0] / (matrix[0][0] + matrix[1][0]),
                 matrix[1][1] / (matrix[0][1] + matrix[1][1])]
    assert [per_class[label][:2] for label in ("0", "1")] == [[f4(precision[i]), f4(recall[i])]
                                                            for i in (0, 1)]
    assert per_class["macro average"][:2] == [f4(sum(precision) / 2), f4(sum(recall) / 2)]

    stats = table(page, "data-stats")
    assert stats["header"] == ["label", "train", "dev"]
    assert stats["0"] == ["48", "16"] and stats["all"] == ["96", "32"]

    dev_rows = synthetic_rows(32, 2)
    samples = page.tables["samples"][1:]
    assert [(r[1], r[2]) for r in samples] == dev_rows[:5]
    mistakes = page.tables["mistakes"][1:]
    assert all(r[2] != r[3] for r in mistakes)
    assert len(mistakes) == min(5, 32 - matrix[0][0] - matrix[1][1])

    # curves: inline in the page, a PNG beside the Markdown, which holds the same tables
    assert page.images["curves"].startswith("data:image/png;base64,iVBOR")
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "![" in md and "](curves.png)" in md
    html_tables = [[[c.strip() for c in row] for row in page.tables[t]] for t in page.order]
    assert markdown_tables(out / "report.md") == html_tables
    assert (cls_run / "config.yaml").read_text().strip() in md
    text = (out / "report.html").read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text


def test_no_data_report_reads_only_the_run_files(cls_run, tmp_path, monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("--no-data must not load the model")

    monkeypatch.setattr("tunelab.report.predictions.load_trained", refuse)
    assert main(["report", str(cls_run), "--no-data", "--out", str(tmp_path / "r")]) == 0
    page = html_page(tmp_path / "r" / "report.html")
    assert "confusion" not in page.tables and "final-metrics" in page.tables
    assert "--no-data" in (tmp_path / "r" / "report.md").read_text()


@pytest.fixture(scope="module")
def ner_run(tiny_model_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ner")
    train(validate(ner_config(tiny_model_dir, toy_ner_files(root), root / "run", max_steps=30,
                              eval_every=15)), log=quiet)
    return root / "run"


def test_ner_page_has_the_per_entity_table_and_tagged_sentences(ner_run, tmp_path):
    from seqeval.metrics.sequence_labeling import get_entities

    from tunelab.data.conll import read_conll

    assert main(["report", str(ner_run), "--out", str(tmp_path / "r"), "--samples", "3"]) == 0
    page = html_page(tmp_path / "r" / "report.html")
    final = json.loads((ner_run / "summary.json").read_text())["final_dev"]
    entities = table(page, "per-entity")
    for kind, v in final["per_type"].items():
        assert entities[kind] == [f4(v["precision"]), f4(v["recall"]), f4(v["f1"]),
                                  str(v["support"])]
    assert entities["overall (micro)"][2] == f4(final["f1"])
    dev = read_conll(ner_run.parent / "dev.txt", 0, -1, "iob2")
    gold = sum(len(get_entities(list(s.tags))) for s in dev)
    assert int(entities["overall (micro)"][3]) == gold
    stats = table(page, "data-stats")
    assert stats["sentences"] == ["160", "40"]
    assert sum(int(v[1]) for k, v in stats.items() if k.endswith(" entities")) == gold
    first = page.tables["samples"][1]
    assert first[1] == " ".join(dev[0].words)
    assert first[2] == "; ".join(f"{k}: {' '.join(dev[0].words[a:b + 1])}"
                                 for k, a, b in get_entities(list(dev[0].tags)))


def test_causal_lm_page_shows_first_and_last_generations(tmp_path):
    from sft_fixtures import tiny_llama_dir

    rows = [{"instruction": q, "input": "", "output": a}
            for q, a in [("say one", "one two three"), ("say hello", "hello world")] * 6]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    tree = {"task": "causal_lm", "model": {"name": str(tiny_llama_dir(tmp_path / "llama")),
                                           "max_length": 64},
            "data": {"path": str(tmp_path / "train.json"), "eval_size": 2, "samples": 2,
                     "sample_tokens": 6},
            "method": {"name": "lora", "r": 4, "alpha": 8},
            "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 6, "eval_every": 3},
            "output_dir": str(tmp_path / "run")}
    train(validate(tree), log=quiet)
    assert main(["report", str(tmp_path / "run")]) == 0
    page = html_page(tmp_path / "run" / "report" / "report.html")
    first, last = (jsonl(tmp_path / "run" / "samples" / f"step-{s:07d}.jsonl") for s in (0, 6))
    samples = page.tables["samples"]
    assert samples[0] == ["#", "prompt", "step 0", "step 6"]
    assert [r[1:] for r in samples[1:]] == [[a["prompt"], a["response"], b["response"]]
                                            for a, b in zip(first, last)]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert table(page, "final-metrics")["perplexity"][-1] == f4(summary["final_dev"]["perplexity"])
    assert table(page, "data-stats")["examples"] == ["10"]


def test_translation_page_shows_translations_and_scores(tmp_path):
    from translation_fixtures import config as translation_config
    from translation_fixtures import tiny_t5_dir, write_corpus

    tree = translation_config(tiny_t5_dir(tmp_path / "t5"), write_corpus(tmp_path / "c"),
                              tmp_path / "run", steps=4)
    tree["generation"]["max_new_tokens"] = 8
    summary = train(validate(tree), log=quiet)
    assert main(["report", str(tmp_path / "run"), "--samples", "3"]) == 0
    page = html_page(tmp_path / "run" / "report" / "report.html")
    metrics = table(page, "final-metrics")
    assert metrics["bleu"][-2:] == [f4(summary["test_before"]["bleu"]), f4(summary["test"]["bleu"])]
    assert metrics["chrf"][-1] == f4(summary["test"]["chrf"])
    rows = jsonl(tmp_path / "run" / "test_translations.jsonl")
    shown = page.tables["translations"][1:]
    assert [r[1:4] for r in shown] == [[r["source"], r["reference"], r["hypothesis"]]
                                       for r in rows[:3]]
    assert table(page, "data-stats")["pairs"] == ["4", "4", "4"]  # train, dev, test
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    assert f"corpus BLEU {summary['test']['bleu']:.2f}, chrF {summary['test']['chrf']:.2f}" in md


def test_comparison_page_holds_every_run(cls_run, ner_run, tiny_model_dir, cls_data, tmp_path):
    tree = tiny_config(tiny_model_dir, cls_data, tmp_path / "b" / "run", max_steps=16, eval_every=8)
    train(validate(tree), log=quiet)  # LoRA; a second run directory also called "run"
    runs = [cls_run, tmp_path / "b" / "run", ner_run]
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    page = html_page(tmp_path / "cmp" / "compare.html")
    names = [f"{r.resolve().parent.name}/run" for r in runs]  # disambiguated by parent
    assert [row[0] for row in page.tables["runs"][1:]] == names
    metrics = table(page, "metrics")
    assert metrics["header"] == ["score", *names]
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    assert metrics["dev loss"] == [f4(s["final_dev"]["loss"]) for s in summaries]
    accuracy = [f4(s["final_dev"]["accuracy"]) for s in summaries[:2]]
    assert metrics["dev accuracy"] == [*accuracy, "–"]
    assert metrics["dev f1"] == ["–", "–", f4(summaries[2]["final_dev"]["f1"])]
    assert metrics["best step"] == [str(s["best"]["step"]) for s in summaries]
    diff = table(page, "config-diff")
    assert diff["method.name"] == ["full", "lora", "full"]
    assert diff["train.max_steps"] == ["96", "16", "30"]
    assert "output_dir" not in diff and "train.batch_size" not in diff  # same everywhere
    assert page.images["compare-curves"].startswith("data:image/png;base64,")
    assert (tmp_path / "cmp" / "compare-curves.png").is_file()
    assert len(markdown_tables(tmp_path / "cmp" / "compare.md")) == len(page.order)


def test_errors_name_the_run_and_the_file(cls_run, tmp_path, capsys):
    assert main(["report", str(cls_run), "--samples", "-1"]) == 2
    assert capsys.readouterr().err.startswith("error: --samples -1: give the number")
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'nope'}: not a tunelab run directory "
                                       "(no run.json); give the output_dir of a `tunelab train` "
                                       "run\n")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(cls_run, broken, ignore=shutil.ignore_patterns("checkpoints", "best", "report"))
    with open(broken / "metrics.jsonl", "a") as f:
        f.write('{"step": 25, "train_lo\n')
    lines = len((broken / "metrics.jsonl").read_text().splitlines())
    assert main(["report", str(broken), "--no-data"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken / 'metrics.jsonl'}:{lines}: not a JSON line")
    cfg = yaml.safe_load((broken / "config.yaml").read_text())
    cfg["data"]["dev"] = str(tmp_path / "missing.tsv")
    (broken / "config.yaml").write_text(yaml.safe_dump(cfg))
    (broken / "metrics.jsonl").write_text("")
    assert main(["report", str(broken)]) == 2
    assert "missing.tsv" in capsys.readouterr().err


# --------------------------------------------------------------------- headless Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--enable-logging=stderr", "--v=0"]


def chromium(page: Path, tmp: Path, *args: str) -> tuple[str, list[str]]:
    """(stdout, console lines) of one headless Chromium load of a local page."""
    import os
    import shutil
    import subprocess

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (CI=true: the browser test must run; .ci/run "
                        "installs it with apt-get)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    done = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args,
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_page_renders_in_headless_chromium_with_its_tables_and_curves(cls_run, tmp_path):
    from PIL import Image

    main(["report", str(cls_run), "--out", str(tmp_path / "r")])
    page = tmp_path / "r" / "report.html"
    shot = tmp_path / "shot.png"
    _, console = chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,1800")
    assert console == []  # no script error, no blocked resource, no console output at all
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1800)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50  # not a blank page
    # matplotlib's first line colour (tab:blue, 31 119 180) occurs only in the plotted curves
    # (the confusion matrix's shading is that blue at most 68% over white: red >= 103), so
    # the inline PNG was decoded and painted
    blue = sum(n for n, (r, g, b) in colours
               if abs(r - 31) <= 24 and abs(g - 119) <= 24 and abs(b - 180) <= 24)
    assert blue > 300

    dom, console = chromium(page, tmp_path, "--dump-dom")
    assert console == []
    for table_id in ("overview", "final-metrics", "dev-evaluations", "data-stats", "confusion",
                     "per-class", "samples"):
        assert f'<table id="{table_id}">' in dom
    assert '<img id="curves" alt="' in dom and 'src="data:image/png;base64,iVBOR' in dom

    # the console check sees what it must refuse: an external image, blocked by the page's policy
    leaky = tmp_path / "leaky.html"
    leaky.write_text(page.read_text().replace("</body>", '<img src="https://example.invalid/x.png">'
                                                         "</body>"))
    _, console = chromium(leaky, tmp_path, "--dump-dom")
    assert any("Content Security Policy" in line for line in console), console


def test_unfinished_run_page_uses_the_metrics_log(cls_run, tmp_path):
    import shutil

    run = tmp_path / "unfinished"
    shutil.copytree(cls_run, run, ignore=shutil.ignore_patterns("summary.json", "model", "report"))
    assert main(["report", str(run)]) == 0
    page = html_page(run / "report" / "report.html")
    dev = [r for r in jsonl(run / "metrics.jsonl") if r.get("split") == "dev"]
    metrics = table(page, "final-metrics")
    assert metrics["header"] == ["metric", "dev before training",
                                 f"dev, last evaluation (step {dev[-1]['step']})"]
    assert metrics["accuracy"] == [f4(dev[0]["accuracy"]), f4(dev[-1]["accuracy"])]
    md = (run / "report" / "report.md").read_text()
    assert "no summary.json: it is unfinished" in md and "the run has no model/ yet" in md

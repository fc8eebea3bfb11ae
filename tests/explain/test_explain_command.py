"""`tunelab explain` end to end on trained runs: what is explained is what predict
predicts, the three outputs agree, --faithfulness prints its table against random, and the
report's explanation section marks dev mistakes and successes."""

from __future__ import annotations

import json

import pytest
import torch
from explain_fixtures import toy_cls_run
from report_pages import html_page

from tunelab.commands.explain import explain, explain_for_report
from tunelab.errors import ConfigError, DataError
from tunelab.explain.explainers import explain_generation
from tunelab.report import report
from tunelab.report.explanations import explanation_sections, marked
from tunelab.report.rundata import read_run
from tunelab.runs.trained import load_trained
from tunelab.tasks.inference import classify, extract_entities

TEXTS = ["the acting was wonderful , truly", "a boring , awful plot"]


@pytest.fixture(scope="module")
def cls_run(tiny_model_dir, tmp_path_factory):
    return toy_cls_run(tiny_model_dir, tmp_path_factory.mktemp("explain-cls"))


def _lines_up(item: dict) -> None:
    for w in item["words"]:
        assert item["text"][w["start"]:w["end"]] == w["word"]


def test_classification_explains_the_predicted_label_in_every_format(cls_run, tmp_path, capsys):
    out = explain(cls_run, TEXTS, json_out=tmp_path / "e.json", html_out=tmp_path / "e.html",
                  method="grad_x_input", colour=False)
    model, tok, info = load_trained(cls_run)
    predicted = [label for label, _, _ in classify(model, tok, info, TEXTS)]
    written = json.loads((tmp_path / "e.json").read_text())
    assert written == json.loads(json.dumps(out))
    assert [e["target"] for e in written["explanations"]] == [f"label {p}" for p in predicted]
    for item in written["explanations"]:
        _lines_up(item)
    shown = capsys.readouterr().out
    assert "\x1b[" not in shown
    for item in written["explanations"]:
        for w in item["words"]:
            assert f"{w['word']}[{w['score']:+.3f}]" in shown
    page = (tmp_path / "e.html").read_text()
    assert "<script" not in page and "Content-Security-Policy" in page
    assert all(f">{w}</span>" in page for w in ("wonderful", "boring"))


def test_a_chosen_label_and_colour(cls_run, capsys):
    out = explain(cls_run, [TEXTS[0]], label="0", method="rollout", colour=True)
    assert out["explanations"][0]["target"] == "label 0"
    assert "\x1b[48;5;" in capsys.readouterr().out
    with pytest.raises(DataError, match="--label 'neutral': not a label of this run"):
        explain(cls_run, [TEXTS[0]], label="neutral")
    with pytest.raises(ConfigError, match="--method 'lime'"):
        explain(cls_run, [TEXTS[0]], method="lime")
    with pytest.raises(DataError, match="give texts as arguments"):
        explain(cls_run, [])


def test_faithfulness_reports_the_method_against_random(cls_run, capsys):
    out = explain(cls_run, [], data=str(cls_run.parent / "dev.tsv"), faithfulness=True,
                  steps=8, limit=5, colour=False)
    table = out["faithfulness"]
    assert set(table) == {"ig", "random"}
    assert table["ig"]["n"] == table["random"]["n"] == 5
    assert table["ig"]["completeness_error"] >= 0
    shown = capsys.readouterr().out
    assert "faithfulness on 5 texts" in shown and "IG completeness error" in shown
    assert any(line.startswith("random") for line in shown.splitlines())


def test_data_rows_are_explained_like_texts(cls_run):
    dev = cls_run.parent / "dev.tsv"
    out = explain(cls_run, [], data=str(dev), limit=3, method="grad_x_input", colour=False,
                  log=lambda _: None)
    rows = [line.split("\t")[0] for line in dev.read_text().splitlines()[1:4]]
    assert [e["text"] for e in out["explanations"]] == rows


def test_ner_explains_each_entity_predict_finds(ner_run):
    text = "john smith visited paris with google today ."
    out = explain(ner_run, [text], method="grad_x_input", colour=False, log=lambda _: None)
    model, tok, info = load_trained(ner_run)
    found = extract_entities(model, tok, info, [text]).entities[0]
    assert found  # the toy NER run finds people, places and companies
    assert [e["extra"]["entity"] for e in out["explanations"]] == [
        {"type": f.type, "start": f.start, "end": f.end} for f in found]
    for item in out["explanations"]:
        _lines_up(item)


def test_each_generated_token_is_explained_in_generation_order(tmp_path):
    from sft_fixtures import tiny_llama_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_llama_dir(tmp_path / "llama")
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    tok = AutoTokenizer.from_pretrained(base)
    prompt = "hello world, how are"
    explained = explain_generation(model, tok, prompt, "ig", steps=8, max_new_tokens=3)
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        greedy = model.generate(ids, max_new_tokens=3, do_sample=False,
                                eos_token_id=tok.eos_token_id)[0, ids.shape[1]:].tolist()
    greedy = greedy[:greedy.index(tok.eos_token_id)] if tok.eos_token_id in greedy else greedy
    assert [e.extra["token"] for e in explained] == [tok.decode([t]) for t in greedy]
    for step, e in enumerate(explained):
        assert e.text.startswith(prompt)
        assert len(e.words) == len([w for w in e.words if w.end <= len(prompt)]) + step
        for w in e.words:
            assert e.text[w.start:w.end] == w.word
        assert e.completeness_error is not None


# ------------------------------------------------------------------ the report's section

def test_report_explains_dev_mistakes_and_successes(cls_run, tmp_path):
    seen: list[list[str]] = []

    def explainer(run_dir, texts):
        seen.append(texts)
        return explain_for_report(run_dir, texts, steps=8)

    page = html_page(report([cls_run], tmp_path / "r", samples=2, log=lambda _: None,
                            explainer=explainer))
    rows = page.tables["explanations"]
    assert rows[0][:2] == ["#", "kind"] and len(rows) - 1 == len(seen[0]) <= 4
    for row in rows[1:]:
        kind, gold, predicted = row[1], row[3], row[4]
        assert kind == ("mistake" if gold != predicted else "success")
    for text, row in zip(seen[0], rows[1:]):
        assert row[2].replace("[", "").replace("]", "") == text  # the text, only marked
    assert explanation_sections(read_run(cls_run), None, True, 2) == []  # no explainer


def test_marked_brackets_the_top_positive_words_in_place():
    text = "not bad , really good"
    words = [{"word": w, "start": text.index(w), "end": text.index(w) + len(w), "score": s}
             for w, s in (("not", -0.5), ("bad", 0.1), (",", 0.0), ("really", 0.3),
                          ("good", 0.6))]
    out = marked({"text": text, "words": words}, k=2)
    assert out == "not bad , [really] [good]"

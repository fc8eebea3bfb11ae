"""Translation: parallel files, BLEU/chrF, the encoder-decoder route (a tiny T5 overfits a
few pairs) and the decoder-only route (a chat turn per pair), scored before and after."""

from __future__ import annotations

import json

import pytest

from sft_fixtures import tiny_llama_dir
from translation_fixtures import PAIRS, config, tiny_t5_dir, write_corpus
from tunelab.config import validate
from tunelab.data.parallel import read_parallel
from tunelab.errors import DataError
from tunelab.tasks.translation import first_line, translation_scores
from tunelab.recipes.run import train

def test_parallel_files_align_and_errors_name_file_and_line(tmp_path):
    root = write_corpus(tmp_path / "c")
    pairs = read_parallel(root, "train", "en", "de", limit=3)
    assert [(p.source, p.target) for p in pairs] == PAIRS[:3]
    assert pairs[1].where.endswith("train.en:2")
    (root / "dev.de").write_text("eins\n")
    with pytest.raises(DataError, match=r"dev.en has 4 lines but .*dev.de has 1: parallel files"):
        read_parallel(root, "dev", "en", "de")
    (root / "test.de").write_text("a\n\nc\nd\n")
    with pytest.raises(DataError, match=r"test.de:2: empty line in a parallel file"):
        read_parallel(root, "test", "en", "de")
    with pytest.raises(DataError, match=r"val.en: not found; files there: dev.de, dev.en"):
        read_parallel(root, "val", "en", "de")


def test_scores_match_sacrebleu_and_first_line():
    import sacrebleu

    hyps, refs = ["der schnelle fuchs", "hallo welt", "das meer"], [t for _, t in PAIRS[:3]]
    got = translation_scores(hyps, refs)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert translation_scores(refs, refs) == {"bleu": pytest.approx(100.0),
                                              "chrf": pytest.approx(100.0)}
    assert first_line("  hallo welt\n\nNote: greeting") == "hallo welt" and first_line(" ") == ""


def test_tiny_t5_overfits_a_few_pairs(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c")
    logs: list[str] = []
    s = train(validate(config(tiny_t5_dir(tmp_path / "t5"), corpus, tmp_path / "run", steps=150,
                              lr=1e-2)), log=logs.append)
    assert any("route: encoder-decoder" in line for line in logs)
    assert s["final_dev"]["loss"] < 0.2 * s["initial_dev"]["loss"]
    assert s["test_before"]["bleu"] < 5.0 and s["test"]["chrf"] > 75.0
    rows = [json.loads(x) for x in (tmp_path / "run" / "test_translations.jsonl").read_text().splitlines()]
    assert [r["reference"] for r in rows] == [t for _, t in PAIRS]
    assert sum(r["hypothesis"] == r["reference"] for r in rows) >= 2
    assert any(line.startswith("test after training:  BLEU:") for line in logs)
    out = eval_cli(tmp_path / "run", capsys)  # the saved model reloads as a seq2seq model
    assert out[-1] == f"BLEU: {s['test']['bleu']:.2f}  chrF: {s['test']['chrf']:.2f}"


def eval_cli(run, capsys) -> list[str]:
    from tunelab.cli import main

    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    return capsys.readouterr().out.splitlines()


def test_decoder_route_scores_before_and_after_and_evaluates(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c")
    logs: list[str] = []
    tree = config(tiny_llama_dir(tmp_path / "llama"), corpus, tmp_path / "run", steps=40)
    tree["generation"]["max_new_tokens"] = 16
    tree["model"]["max_length"] = 96  # the chat prompt alone is ~40 tiny-BPE tokens
    s = train(validate(tree), log=logs.append)
    assert any("route: decoder-only" in line for line in logs)
    assert s["final_dev"]["loss"] < 0.5 * s["initial_dev"]["loss"]
    assert s["test"]["chrf"] > s["test_before"]["chrf"]
    assert json.loads((tmp_path / "run" / "test_before.json").read_text()) == s["test_before"]
    out = eval_cli(tmp_path / "run", capsys)
    assert out[-1] == f"BLEU: {s['test']['bleu']:.2f}  chrF: {s['test']['chrf']:.2f}"


def test_translation_config_errors():
    from tunelab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.prompt: .*must contain \{source\}"):
        validate({"task": "translation", "data": {"prompt": "Translate:"}, "output_dir": "x"})
    with pytest.raises(ConfigError, match="train.metric: translation runs select by held-out loss"):
        validate({"task": "translation", "train": {"metric": "accuracy"}, "output_dir": "x"})


def test_multi30k_catalog_name_reads_the_real_corpus(monkeypatch):
    """`data.path: multi30k` is a folder in the data directory, with its own split names."""
    from conftest import real_data_dir
    from tunelab.data.parallel import CATALOG_SPLITS, corpus_dir

    monkeypatch.setenv("TUNELAB_DATA_DIR", str(real_data_dir()))
    root = corpus_dir("multi30k")
    assert root == real_data_dir() / "multi30k"
    pairs = read_parallel(root, CATALOG_SPLITS["multi30k"]["test"], "en", "de", limit=3)
    assert len(pairs) == 3 and pairs[0].source.startswith("A man in an orange hat")


def test_a_missing_catalog_folder_says_where_it_looked(tmp_path, monkeypatch):
    from tunelab.data.parallel import corpus_dir

    monkeypatch.setenv("TUNELAB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as exc:
        corpus_dir("multi30k")
    assert str(exc.value) == (f"{tmp_path / 'multi30k'}: catalog folder not found; set "
                              f"TUNELAB_DATA_DIR to the folder that holds multi30k/ (now {tmp_path})")

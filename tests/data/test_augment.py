"""Data augmentation: operation rates on a large sample, determinism by seed, labels kept,
Chinese words through jieba, embedding-neighbour synonyms, on-the-fly epochs with exact
resume, the materialised file, and back-translation through tiny translation runs."""

from __future__ import annotations

import json
import random

import pytest
import torch

from conftest import tiny_config
from tunelab.data.augment.augmenter import Augmenter
from tunelab.data.augment.epochs import AugmentedTrain, write_jsonl
from tunelab.config.augment import AugmentConfig
from tunelab.data.augment.words import join_words, language_of, split_words
from tunelab.config import validate
from tunelab.data.readers import Example
from tunelab.errors import ConfigError

OPS = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion", "mask")


def fake_synonyms(word: str) -> tuple[str, ...]:
    """Two synonyms for every content word; none for stopwords."""
    return () if word in ("the", "a", "not") else (f"{word}_s1", f"{word}_s2")


def only(op: str, rate: float, **cfg) -> Augmenter:
    rates = {name: (rate if name == op else 0.0) for name in OPS}
    return Augmenter(AugmentConfig(ops=rates, **cfg), fake_synonyms, "[MASK]")


def sentences(n: int = 1500, length: int = 20) -> list[list[str]]:
    rng = random.Random(7)
    return [[f"w{k}" for k in rng.sample(range(1000), length)] for _ in range(n)]


def run(aug: Augmenter, texts: list[list[str]]) -> list[list[str]]:
    return [aug.text(" ".join(words), aug.rng(0, i, 0))[0].split() for i, words in enumerate(texts)]


def transpositions(before: list[str], after: list[str]) -> int:
    """The fewest swaps that turn `before` into `after` (a permutation of distinct words)."""
    where = {w: i for i, w in enumerate(before)}
    perm, seen, cycles = [where[w] for w in after], set(), 0
    for start in range(len(perm)):
        if start not in seen:
            cycles += 1
            while start not in seen:
                seen.add(start)
                start = perm[start]
    return len(perm) - cycles


@pytest.mark.parametrize("op,rate", [("synonym_replacement", 0.3), ("random_insertion", 0.15),
                                     ("random_swap", 0.05), ("random_deletion", 0.2),
                                     ("mask", 0.25)])
def test_each_operation_acts_at_its_rate(op, rate):
    """30,000 words: the measured share is within 0.01 of the rate (binomial sd ~0.003)."""
    texts = sentences()
    out = run(only(op, rate), texts)
    n = sum(map(len, texts))
    if op == "synonym_replacement":
        changed = sum(a != b for t, o in zip(texts, out) for a, b in zip(t, o))
        assert all(len(t) == len(o) for t, o in zip(texts, out))
        assert all(b == a or b in fake_synonyms(a) for t, o in zip(texts, out) for a, b in zip(t, o))
        measured = changed / n
    elif op == "random_insertion":
        measured = (sum(map(len, out)) - n) / n
        for t, o in zip(texts, out):  # the originals stay in order; the rest are synonyms
            it = iter(o)
            assert all(w in it for w in t)
            assert all(w.rsplit("_", 1)[0] in t for w in o if w not in t)
    elif op == "random_swap":
        assert all(sorted(t) == sorted(o) for t, o in zip(texts, out))
        # swaps that undo each other are invisible: a little under the rate
        measured = sum(transpositions(t, o) for t, o in zip(texts, out)) / n
    elif op == "random_deletion":
        for t, o in zip(texts, out):
            it = iter(t)
            assert all(w in it for w in o)  # what is left keeps its order
        measured = (n - sum(map(len, out))) / n
    else:
        assert all(len(t) == len(o) for t, o in zip(texts, out))
        measured = sum(w == "[MASK]" for o in out for w in o) / n
    assert measured == pytest.approx(rate, abs=0.01)


def test_negations_are_never_deleted_masked_or_replaced():
    texts = [["not", *t[:5], "never", *t[5:10]] for t in sentences(400)]
    for op in ("random_deletion", "mask", "synonym_replacement"):
        for o in run(only(op, 0.9), texts):
            assert o.count("not") == 1 and o.count("never") == 1, (op, o)


def test_copies_are_a_function_of_seed_epoch_and_example_only():
    ex = [Example(" ".join(t), None, str(i % 3), f"f:{i}") for i, t in enumerate(sentences(30, 12))]
    cfg = {"copies": 3, "ops": {"random_swap": 0.2, "random_deletion": 0.2, "mask": 0.1}}
    aug = Augmenter(AugmentConfig(**cfg, seed=1), fake_synonyms, "[MASK]")
    first = [c.example.text for i, e in enumerate(ex) for c in aug.copies(e, i, epoch=0)]
    # the same seed again, visiting the examples in reverse: the same copies
    again = Augmenter(AugmentConfig(**cfg, seed=1), fake_synonyms, "[MASK]")
    back = {i: [c.example.text for c in again.copies(ex[i], i, 0)] for i in reversed(range(30))}
    assert first == [t for i in range(30) for t in back[i]]
    other_seed = Augmenter(AugmentConfig(**cfg, seed=2), fake_synonyms, "[MASK]")
    assert first != [c.example.text for i, e in enumerate(ex) for c in other_seed.copies(e, i, 0)]
    epoch1 = [c.example.text for i, e in enumerate(ex) for c in aug.copies(e, i, epoch=1)]
    assert epoch1 != first and sum(a == b for a, b in zip(first, epoch1)) < len(first) // 2
    fixed = Augmenter(AugmentConfig(**cfg, seed=1, per_epoch=False), fake_synonyms, "[MASK]")
    assert [c.example.text for i, e in enumerate(ex) for c in fixed.copies(e, i, 5)] == first


def test_rows_keep_every_original_and_copy_its_label(tmp_path):
    ex = [Example(f"w{i} a w{i + 1} the w{i + 2} x{i}", f"second {i}", "pos" if i % 2 else "neg",
                  f"f:{i}") for i in range(20)]
    rates = {name: 0.0 for name in OPS} | {"synonym_replacement": 0.5, "mask": 0.3}
    aug = Augmenter(AugmentConfig(copies=2, combine="all", ops=rates),
                    fake_synonyms, "[MASK]")
    train = AugmentedTrain(ex, aug, lambda rows: rows, [])
    rows = train.rows(0)
    assert len(rows) == len(train) == 60
    assert [r.example for r in rows[:20]] == ex and all(r.source == "original" for r in rows[:20])
    for r in rows[20:]:
        assert r.source == "eda" and r.ops == ("synonym_replacement", "mask")
        assert r.example.label == ex[r.origin].label
        assert r.example.text_pair == ex[r.origin].text_pair  # only the text changes
    assert sum(r.example.text != ex[r.origin].text for r in rows[20:]) >= 30
    counts = write_jsonl(train, tmp_path / "aug.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "aug.jsonl").read_text().splitlines()]
    assert counts == {"original": 20, "eda": 40} and len(lines) == 60
    assert lines[0] == {"text": ex[0].text, "label": "neg", "text_pair": "second 0",
                        "augmented": False, "source": "original", "ops": [], "origin": 0}
    assert all(lines[r["origin"]]["label"] == r["label"] and r["augmented"] for r in lines[20:])


ZH = ["这家酒店的服务非常好，房间也很干净。", "早餐不好吃，而且价格太贵了。",
      "位置很方便，离地铁站只有五分钟。", "这次入住体验不好，不会再来了。"]


def test_chinese_text_is_segmented_by_jieba_and_joined_back():
    import jieba

    words = split_words(ZH[0], "zh")
    assert words == [w for w in jieba.lcut(ZH[0]) if w.strip()]
    assert "酒店" in words and "服务" in words and "干净" in words  # words, not characters
    assert all(join_words(split_words(t, "zh"), "zh") == t for t in ZH)
    assert join_words(["我", "喜欢", "iPhone", "15", "手机"], "zh") == "我喜欢iPhone 15手机"
    assert language_of(ZH[1], "auto") == "zh" and language_of("a fine film", "auto") == "en"


def test_chinese_copies_permute_and_drop_jieba_words_and_keep_negations():
    ex = [Example(t, None, str(i % 2), f"zh:{i}") for i, t in enumerate(ZH * 25)]
    swap = Augmenter(AugmentConfig(copies=1, ops={name: 0.0 for name in OPS} | {"random_swap": 0.3}),
                     fake_synonyms, None)
    delete = Augmenter(AugmentConfig(copies=1, ops={name: 0.0 for name in OPS}
                                     | {"random_deletion": 0.5}), fake_synonyms, None)
    changed = 0
    for i, e in enumerate(ex):
        original = split_words(e.text, "zh")
        swapped = swap.copies(e, i, 0)[0].example
        assert sorted(split_words(swapped.text, "zh")) == sorted(original) or \
            sorted("".join(split_words(swapped.text, "zh"))) == sorted("".join(original))
        assert swapped.label == e.label and " " not in swapped.text
        changed += swapped.text != e.text
        kept = delete.copies(e, i, 0)[0].example.text
        assert kept.count("不") == e.text.count("不")  # 不 is never deleted
    assert changed >= 60


def test_mask_needs_a_mask_token_and_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"data.augment.ops.mask: the model's tokenizer has no mask"):
        Augmenter(AugmentConfig(ops={"mask": 0.1}), fake_synonyms, None)
    base = {"train": "x.tsv"}
    with pytest.raises(ConfigError, match=r"copies is 0 and there is no back_translation"):
        validate({"data": {**base, "augment": {"copies": 0}}})
    with pytest.raises(ConfigError, match=r"every rate is 0"):
        validate({"data": {**base, "augment": {"ops": {name: 0 for name in OPS}}}})
    with pytest.raises(ConfigError, match=r"did you mean 'data.augment.ops.random_swap'"):
        validate({"data": {**base, "augment": {"ops": {"random_swp": 0.1}}}})


def test_synonyms_are_embedding_neighbours_among_whole_words(tiny_model_dir):
    from tunelab.data.augment.synonyms import EmbeddingSynonyms, whole_words
    from tunelab.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)  # MiniLM's WordPiece vocabulary
    vocab = whole_words(tok)
    assert "good" in vocab and "##ing" not in vocab and "[CLS]" not in vocab
    assert all(tok.convert_ids_to_tokens(i) == w for w, i in list(vocab.items())[:2000])
    emb = torch.randn(len(tok), 128, generator=torch.Generator().manual_seed(0))
    good, great, the, ing = (tok.convert_tokens_to_ids(t) for t in ("good", "great", "the", "##ing"))
    emb[great] = emb[good] + 0.01 * torch.randn(128)
    emb[the] = emb[good] + 0.01 * torch.randn(128)  # a stopword: never proposed
    emb[ing] = emb[good] + 0.01 * torch.randn(128)  # a word piece: never proposed
    syn = EmbeddingSynonyms(tok, emb, neighbours=3, min_similarity=0.6)
    syn.prepare({"good", "the", "zzzqx"})
    assert syn("good") == ("great",)  # random 128-d vectors fall far below 0.6
    assert syn("the") == () and syn("zzzqx") == ()
    loose = EmbeddingSynonyms(tok, emb, neighbours=3, min_similarity=-1.0)
    assert len(loose("good")) == 3 and loose("good")[0] == "great"


def test_byte_bpe_whole_words_are_the_word_start_tokens():
    from sft_fixtures import tiny_tokenizer
    from tunelab.data.augment.synonyms import whole_words

    tok = tiny_tokenizer()
    vocab = whole_words(tok)
    assert {"quick", "brown", "fox", "world"} <= set(vocab)
    # inside a sentence a word follows a space: only the space-marked tokens are words
    assert all(tok.convert_ids_to_tokens(i) == "\u0120" + w for w, i in vocab.items())


def augment_tree(tiny_model_dir, tiny_data, out, **augment):
    tree = tiny_config(tiny_model_dir, tiny_data, out, max_steps=None, epochs=2, eval_every=None,
                       checkpoint_every=7, lr=3e-3)
    tree["method"] = {"name": "full"}
    tree["data"]["augment"] = {"copies": 2, "seed": 3, **augment}
    return tree


def test_on_the_fly_copies_change_per_epoch_learn_and_resume_exactly(tiny_model_dir, tiny_data,
                                                                      tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from tunelab.train import loop as loop_mod
    from tunelab.recipes.run import train
    from tunelab.train.signals import Interrupted

    seen: dict[int, list] = {}
    real_epoch = loop_mod.Trainer.epoch_data

    def record(self, epoch):
        data = real_epoch(self, epoch)
        seen.setdefault(epoch, data[0].input_ids)
        return data

    monkeypatch.setattr(loop_mod.Trainer, "epoch_data", record)
    logs: list[str] = []
    tree = augment_tree(tiny_model_dir, tiny_data, tmp_path / "straight")
    straight = train(validate(tree), log=logs.append)
    # 96 originals + 2 copies each, 8 per batch: 36 batches an epoch, 2 epochs
    assert straight["steps"] == 72
    assert any("96 originals + 2 copies each = 288 training rows per epoch" in x for x in logs)
    assert len(seen[0]) == len(seen[1]) == 288
    assert seen[0][:96] == seen[1][:96] and seen[0][96:] != seen[1][96:]
    assert straight["final_dev"]["accuracy"] >= 0.9 > straight["initial_dev"]["accuracy"]

    monkeypatch.setattr(loop_mod.Trainer, "epoch_data", real_epoch)
    tree["output_dir"] = str(tmp_path / "interrupted")
    real_step = loop_mod.Trainer._step

    def stop_in_epoch_two(self, step, trainable):
        out = real_step(self, step, trainable)
        if step == 39:
            raise Interrupted("stopped for the test")
        return out

    monkeypatch.setattr(loop_mod.Trainer, "_step", stop_in_epoch_two)
    with pytest.raises(Interrupted):
        train(validate(tree), log=logs.append)
    monkeypatch.setattr(loop_mod.Trainer, "_step", real_step)
    train(validate(tree), resume=True, log=logs.append)  # from the step-35 checkpoint
    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "interrupted" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_data_augment_command_writes_the_epochs_rows(tiny_model_dir, tiny_data, tmp_path, capsys):
    import yaml

    from tunelab.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(augment_tree(tiny_model_dir, tiny_data, tmp_path / "r")))
    out = tmp_path / "aug.jsonl"
    assert main(["data", "augment", str(path), "--out", str(out), "data.augment.copies=1"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 192 and sum(r["augmented"] for r in rows) == 96
    assert "wrote 192 rows" in capsys.readouterr().out
    assert main(["data", "augment", str(path), "--out", str(tmp_path / "e1.jsonl"), "--epoch", "1",
                 "data.augment.copies=1"]) == 0
    epoch1 = [json.loads(x) for x in (tmp_path / "e1.jsonl").read_text().splitlines()]
    assert epoch1[:96] == rows[:96] and epoch1[96:] != rows[96:]
    # the file trains as plain data: the originals and copies with their labels
    from tunelab.data.readers import Columns, read_examples

    back = read_examples(out, "jsonl", True, Columns("text", "label"))
    assert [e.label for e in back[96:]] == [rows[r["origin"]]["label"] for r in rows[96:]]
    path.write_text(yaml.safe_dump({k: v for k, v in augment_tree(
        tiny_model_dir, tiny_data, tmp_path / "r").items()} | {"data": {"train": "x.tsv"}}))
    assert main(["data", "augment", str(path), "--out", str(out)]) == 2
    assert "no data.augment section" in capsys.readouterr().err


PARAPHRASES = ["a fast brown fox", "hi world", "the ocean and the sky", "one two three"]


@pytest.fixture(scope="module")
def translation_runs(tmp_path_factory):
    """Two tiny T5 runs that overfit four pairs: en -> de, and de -> en onto paraphrases."""
    from translation_fixtures import PAIRS, config, tiny_t5_dir, write_corpus
    from tunelab.recipes.run import train

    root = tmp_path_factory.mktemp("bt")
    t5 = tiny_t5_dir(root / "t5")
    there = config(t5, write_corpus(root / "en-de"), root / "en-de-run", steps=200)
    back = config(t5, write_corpus(root / "de-en", [(p, de) for p, (_, de) in
                                                    zip(PARAPHRASES, PAIRS)]), root / "de-en-run",
                  steps=200)
    back["data"] |= {"source_lang": "de", "target_lang": "en"}
    for tree in (there, back):
        train(validate(tree), log=lambda _: None)
    return root / "en-de-run", root / "de-en-run", [en for en, _ in PAIRS]


def test_back_translation_adds_one_paraphrase_per_example_through_two_runs(translation_runs):
    from tunelab.recipes.backtranslate import BackTranslator, paraphraser
    from tunelab.data.augment.epochs import back_translations

    there, back, english = translation_runs
    cfg = AugmentConfig(copies=0, back_translation={"run": str(there), "back_run": str(back),
                                                    "pivot": "de", "max_new_tokens": 16})
    assert cfg.back_translation is not None
    out = BackTranslator(cfg.back_translation, torch.device("cpu")).paraphrase(english, print)
    assert sum(a == b for a, b in zip(out, PARAPHRASES)) >= 3  # the runs learnt their pairs
    examples = [Example(t, None, label, f"f:{i}") for i, (t, label) in
                enumerate(zip(english, ["pos", "neg", "pos", "neg"]))]
    logs: list[str] = []
    rows = back_translations(examples, paraphraser(cfg), logs.append)
    # a paraphrase equal to its original ("one two three") is not a new example
    assert all(r.example.text != examples[r.origin].text for r in rows)
    assert all(r.example.label == examples[r.origin].label and r.source == "back_translation"
               for r in rows)
    assert [r.example.text for r in rows] == [p for p, o in zip(out, english) if p != o and p]
    assert any(f"{len(rows)} of 4 back-translations differ" in x for x in logs)


def test_back_translation_checks_directions_and_reverses_the_prompt(translation_runs, tmp_path):
    from tunelab.recipes.backtranslate import BackTranslator
    from tunelab.config.augment import BackTranslation
    from tunelab.recipes.translation import translator

    there, back, _ = translation_runs
    with pytest.raises(ConfigError, match=r"pivot: 'fr', but the run .* translates en -> de"):
        BackTranslator(BackTranslation(run=str(there), pivot="fr"))
    with pytest.raises(ConfigError, match=r"back_run: .* translates en -> de; the way back must "
                                          r"be de -> en"):
        BackTranslator(BackTranslation(run=str(there), back_run=str(there)))
    with pytest.raises(ConfigError, match=r"is not a tunelab run directory"):
        BackTranslator(BackTranslation(run=str(tmp_path)))
    # without back_run the same model is asked for the reverse direction
    from sft_fixtures import tiny_tokenizer

    cfg = validate({"task": "translation", "model": {"name": "x"}, "data": {"path": "c"}})
    tok = tiny_tokenizer()
    fwd, rev = (translator(cfg, tok, seq2seq=False, test=[], reverse=r) for r in (False, True))
    assert "from English to German" in fwd.prompt("hi") and "from German to English" in rev.prompt("hi")
    s2s = translator(cfg, tok, seq2seq=True, test=[], reverse=True)
    assert s2s.prefix("hallo") == "translate German to English: hallo"

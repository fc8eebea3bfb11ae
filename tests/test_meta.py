"""Meta-learning: episodes, config errors, and a real effect on a tiny synthetic task family."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tunelab import methods
from tunelab.config import DataConfig, load_config
from tunelab.errors import AdapterError, ConfigError, DataError
from tunelab.meta.config import MetaSettings, load_meta_config
from tunelab.meta.episodes import Pool, build_pools, sample_episode
from tunelab.meta.learn import adapt, mean_loss, meta_train, zero_
from tunelab.meta.run import meta
from tunelab.models import load_classifier
from tunelab.train.run import train

CATEGORIES = {"colour": ["red", "blue", "green", "yellow", "purple", "pink"],
              "animal": ["dog", "cat", "horse", "cow", "sheep", "pig"],
              "country": ["france", "china", "japan", "india", "spain", "italy"],
              "vehicle": ["car", "bus", "train", "truck", "boat", "plane"],
              "body": ["hand", "head", "foot", "arm", "leg", "eye"],
              "number": ["one", "two", "three", "four", "five", "six"],
              "food": ["bread", "cheese", "rice", "soup", "cake", "meat"],
              "weather": ["rain", "snow", "wind", "storm", "fog", "sun"]}
FILL = ["the", "a", "of", "and", "was", "there", "very", "some", "with", "then", "it", "on"]


def sentences(category: str, n: int, rng: random.Random) -> list[str]:
    """n different sentences: 2-6 filler words and one word of the category, shuffled."""
    out: dict[str, None] = {}
    while len(out) < n:
        words = rng.sample(FILL, rng.randint(1, 4)) + [rng.choice(CATEGORIES[category])]
        rng.shuffle(words)
        out[" ".join(words)] = None
    return list(out)


def write_source(path: Path, categories: list[str], n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = [f"{s}\t{c}" for c in categories for s in sentences(c, n, rng)]
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return path


def source_cfg(path: Path) -> DataConfig:
    return DataConfig(train=str(path), columns={"text": "sentence", "label": "label"},
                      dev_fraction=0.1)


@pytest.fixture
def sources(tmp_path) -> list[Path]:
    names = list(CATEGORIES)
    return [write_source(tmp_path / "a.tsv", names[:4], 40, 1),
            write_source(tmp_path / "b.tsv", names[4:], 40, 2)]


def test_episodes_are_n_way_k_shot_relabelled_and_seeded(tiny_model_dir, sources):
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    pools = build_pools([source_cfg(p) for p in sources], tok, 32, 2, 8)
    assert [sorted(p.by_label) for p in pools] == [sorted(list(CATEGORIES)[:4]),
                                                   sorted(list(CATEGORIES)[4:])]
    seen_sources, first_class = set(), set()
    for ep in range(40):
        e = sample_episode(pools, 2, 3, 5, seed=0, episode=ep)
        assert len(e.support) == 6 and len(e.query) == 10
        assert e.support.labels == [0, 0, 0, 1, 1, 1] and e.query.labels == [0] * 5 + [1] * 5
        pool = next(p for p in pools if p.name == e.source)
        for data, per in ((e.support, 3), (e.query, 5)):
            for i, seq in enumerate(data.input_ids):
                assert seq in pool.by_label[e.classes[i // per]]
        assert not set(map(tuple, e.support.input_ids)) & set(map(tuple, e.query.input_ids))
        seen_sources.add(e.source)
        first_class.add(e.classes[0])
    assert len(seen_sources) == 2 and len(first_class) == 8  # every label takes index 0 sometime
    again = sample_episode(pools, 2, 3, 5, seed=0, episode=7)
    assert again == sample_episode(pools, 2, 3, 5, seed=0, episode=7)
    assert again != sample_episode(pools, 2, 3, 5, seed=1, episode=7)


def test_a_source_with_too_few_labels_or_examples_is_an_error(tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    small = write_source(tmp_path / "small.tsv", ["colour", "animal"], 6, 0)
    with pytest.raises(DataError) as exc:
        build_pools([source_cfg(small)], tok, 32, 2, 16)
    assert str(exc.value) == (f"{small}: 0 labels have 16 or more training examples "
                              "(meta.k_shot + meta.query_shot); an episode needs meta.n_way = 2")


def test_meta_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_meta_config(None, ["meta.sources=[]"])
    assert str(exc.value) == ("config: meta.sources: list should have at least 1 item after "
                              "validation, not 0 (got [])")
    with pytest.raises(ConfigError, match=r"unknown key 'meta\.sources\.1\.trian' \(did you "
                                          r"mean 'meta\.sources\.1\.train'\?\)"):
        load_meta_config(None, ["meta.sources=[{train: sst2}, {trian: ag_news}]"])
    with pytest.raises(ConfigError, match=r"meta\.algorithm: .*'reptile' or 'fomaml'"):
        load_meta_config(None, ["meta.sources=[{train: sst2}]", "meta.algorithm=maml"])
    with pytest.raises(ConfigError, match="full saves no adapter"):
        load_meta_config(None, ["meta.sources=[{train: sst2}]", "method.name=full"])
    cfg = load_meta_config(None, ["meta.sources=[{train: sst2}]", "meta.algorithm=fomaml"])
    assert cfg.meta.outer == 1e-3 and cfg.method.name == "lora"


def fresh_model(model_dir: Path, seed: int):
    torch.manual_seed(seed)
    model = load_classifier(model_dir, ["a", "b"])
    cfg = load_config(None, ["data.train=x", "method.name=lora", "method.r=16", "method.alpha=32",
                             "method.targets=all-linear"]).method
    report = methods.apply(model, cfg)
    return model, report.head


def adapted_query_loss(model, head, episode, pad_id: int) -> float:
    """Zero head, 5 inner steps on the support set, loss on the query set; weights restored."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    zero_([p for n, p in model.named_parameters() if p.requires_grad and n.split(".")[0] in head])
    adapt(model, params, episode.support, 5, 1e-2, pad_id)
    with torch.no_grad():
        loss = mean_loss(model, episode.query, pad_id).item()
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
    return loss


@pytest.mark.parametrize("algorithm", ["reptile", "fomaml"])
def test_meta_learned_start_adapts_faster_on_held_out_pairings(algorithm, tiny_model_dir, tmp_path,
                                                               sources):
    """Sources pair categories within a file; the targets pair categories across the two
    files, a pairing meta-training never saw. After the same 5 steps from each start, the
    meta-learned adapter reaches a lower query loss than a fresh one."""
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    pools = build_pools([source_cfg(p) for p in sources], tok, 32, 2, 16)
    s = MetaSettings(algorithm=algorithm, sources=[source_cfg(p) for p in sources], episodes=120,
                     inner_steps=5, inner_lr=1e-2, k_shot=8, query_shot=8,
                     outer_lr=None if algorithm == "reptile" else 1e-2, log_every=1000)
    model, head = fresh_model(tiny_model_dir, 0)
    fresh, _ = fresh_model(tiny_model_dir, 0)
    history = meta_train(model, head, pools, s, tok.pad_token_id, log=lambda _: None)
    assert len(history) == 120
    rng = random.Random(5)
    names = list(CATEGORIES)
    targets = [Pool("target", {a: tok(sentences(a, 24, rng))["input_ids"],
                               b: tok(sentences(b, 24, rng))["input_ids"]})
               for a, b in [(names[0], names[5]), (names[1], names[6]), (names[2], names[7]),
                            (names[3], names[4])]]
    episodes = [sample_episode([t], 2, 8, 16, seed=3, episode=i) for t in targets for i in range(2)]
    meta_loss = sum(adapted_query_loss(model, head, e, tok.pad_token_id) for e in episodes)
    fresh_loss = sum(adapted_query_loss(fresh, head, e, tok.pad_token_id) for e in episodes)
    meta_loss, fresh_loss = meta_loss / len(episodes), fresh_loss / len(episodes)
    assert meta_loss < 0.8 * fresh_loss, (meta_loss, fresh_loss)

"""Every config in examples/ is valid: `tunelab config show FILE` prints it (exit code 0) and
the printed YAML validates again to the same config. A meta-learning config goes through the
`tunelab meta` loader instead, and a tune config's `search:` section (which `config show`
drops) must be a valid search space. No model loads, no data are read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO
from tunelab.cli import main
from tunelab.config import load_config, validate

EXAMPLES = sorted((REPO / "examples").glob("*.y*ml"))
# Known: `config show` prints a multitask run's default `temperature: 2.0`, and
def _is_meta(tree: dict) -> bool:
    return "meta" in tree


def test_there_are_examples():
    assert len(EXAMPLES) >= 10, EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_is_valid(path: Path, capsys: pytest.CaptureFixture[str]):
    tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(tree, dict), f"{path.name}: not a YAML mapping"
    if _is_meta(tree):
        from tunelab.meta.config import MetaRun, load_meta_config

        cfg = load_meta_config(path)
        again = MetaRun.model_validate(yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))))
        assert again == cfg, f"{path.name}: the dumped meta config validates to another config"
        return
    code = main(["config", "show", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, f"`tunelab config show {path.name}` exited {code}: {err.strip()}"
    shown = yaml.safe_load(out)
    assert isinstance(shown, dict) and "search" not in shown, out
    again = validate(shown, f"{path.name} (as printed by config show)")
    assert again == load_config(path), f"{path.name}: the printed config validates differently"
    if "search" in tree:
        from tunelab.eval.search import parse_space

        base = {k: v for k, v in tree.items() if k != "search"}
        assert parse_space(tree["search"], base, str(path)), f"{path.name}: empty search space"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_documented(path: Path):
    """Each example is shown somewhere in README.md or docs/, so a reader can find it."""
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert any(f"examples/{path.name}" in d.read_text(encoding="utf-8") for d in docs), (
        f"examples/{path.name} is not mentioned in README.md or docs/*.md")

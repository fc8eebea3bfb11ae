"""`tunelab serve TARGET...`: targets sharing a base load it once; names are checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from serve_fixtures import tiny_served

from tunelab.errors import AdapterError, ModelError
from tunelab.serve.targets import load_targets


@pytest.fixture(scope="module")
def served_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    return tiny_served(tmp_path_factory.mktemp("targets"))


def test_adapters_of_one_base_share_one_engine(served_dirs) -> None:
    base, adapters = served_dirs
    # PEFT adapter directories name their base (base_model_name_or_path): loaded once
    served = load_targets([str(adapters["a1"]), str(adapters["a2"])],
                          [f"third={adapters['a3']}"])
    engines = {id(e) for e in served.engines.values()}
    assert len(engines) == 1
    assert served.ids() == [base.name, "a1", "a2", "third"]
    assert served.engines["third"] is served.engines[base.name]
    # the base by name plus the packaged encoder: one engine, one embedding model
    both = load_targets([str(base), "minilm"])
    assert both.ids() == [str(base), "minilm"]
    assert both.encoders["minilm"].task == "embedding"


def test_bad_targets_are_named(served_dirs, tmp_path: Path) -> None:
    _, adapters = served_dirs
    with pytest.raises(AdapterError, match="'a1' is taken"):
        load_targets([str(adapters["a1"])], [f"a1={adapters['a2']}"])
    orphan = tmp_path / "orphan"
    shutil.copytree(adapters["a1"], orphan)
    cfg = json.loads((orphan / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None
    (orphan / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match="no base_model_name_or_path"):
        load_targets([str(orphan)])
    with pytest.raises(AdapterError, match="needs a generative base"):
        load_targets(["minilm"], [str(adapters["a1"])])
    with pytest.raises(ModelError):
        load_targets([str(tmp_path / "missing")])

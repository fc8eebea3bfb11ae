"""`tunelab prune RUN OUT`: structured pruning of a trained run by measured importance."""

from __future__ import annotations

from pathlib import Path

from tunelab.compress.prune import PruneOptions, prune_run


def prune(run_dir: Path, out: Path, heads: float | None = None, ffn: float | None = None,
          layers: int | None = None, examples: int = 256, recover_steps: int = 100) -> Path:
    """Prune, write OUT (and OUT/recovered unless recover_steps is 0); say where things went."""
    opts = PruneOptions(heads, ffn, layers, examples, recover_steps)
    record = prune_run(Path(run_dir), Path(out), opts)
    print(f"wrote {out} (loads with transformers' from_pretrained; what was removed: "
          f"{out}/tunelab_pruned.json)")
    if record.get("recovery"):
        print(f"recovered run: {out}/recovered (score it with `tunelab eval {out}/recovered`)")
    return Path(out)

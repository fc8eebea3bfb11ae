"""`tunelab report`: one self-contained HTML page (and a Markdown twin with its PNGs) per run,
or one page comparing several runs side by side."""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import ConfigError
from tunelab.report import compare, sections
from tunelab.report.document import Document, write
from tunelab.report.explanations import Explainer, explanation_sections
from tunelab.report.rundata import RunFiles, read_run
from tunelab.report.task_sections import TASKS


def run_page(run: RunFiles, use_data: bool = True, samples: int = 10,
             explainer: Explainer | None = None) -> Document:
    s = run.summary or {}
    subtitle = (f"{run.task} · {run.info.get('model_name', run.info['base_model'])} · "
                f"{run.info['method']} · {run.dir}")
    if s:
        subtitle += f" · {s['steps']} steps"
    body = [sections.overview(run), sections.final_metrics(run), sections.curves(run),
            *TASKS[run.task](run, use_data, samples),
            *explanation_sections(run, explainer, use_data, samples), sections.config(run)]
    return Document(f"Run report: {run.name}", subtitle, body)


def _named(runs: list[RunFiles]) -> list[RunFiles]:
    """Runs whose directories share a name are called parent/name, then by the full path."""
    for depth in (1, 2):
        for r in runs:
            r.name = "/".join(r.dir.resolve().parts[-depth:])
        if len({r.name for r in runs}) == len(runs):
            return runs
    for r in runs:
        r.name = str(r.dir)
    return runs


def report(run_dirs: list[Path], out: Path | None = None, use_data: bool = True,
           samples: int = 10, log=print, explainer: Explainer | None = None) -> Path:
    """Write RUN/report/report.html (one run) or OUT/compare.html (several); returns the page."""
    if samples < 0:
        raise ConfigError(f"--samples {samples}: give the number of example rows to show "
                          "(0 or more)")
    runs = _named([read_run(Path(d)) for d in run_dirs])
    if len(runs) == 1:
        doc, stem = run_page(runs[0], use_data, samples, explainer), "report"
        out = out or runs[0].dir / "report"
    else:
        doc, out, stem = compare.comparison(runs), out or Path("compare-report"), "compare"
    page, md = write(doc, out, stem)
    log(f"wrote {page} (self-contained) and {md} with {len(doc.figures())} PNG figure(s)")
    return page

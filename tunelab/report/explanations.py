"""The report's explanation section (classification runs): integrated-gradients attributions
for a few dev mistakes and a few dev successes, as a table with the words that pushed most
toward the predicted label in [brackets].

The report layer cannot import `tunelab.explain` (they are siblings), so the attributions
come from an `Explainer` the caller passes in (`tunelab.commands.explain.explain_for_report`
in the CLI); without one the section is left out. The dev predictions are made again here,
batched, to pick the rows: the cost of one more pass over dev.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunelab.report.document import Para, Section, Table
from tunelab.report.predictions import classification_predictions, classification_stats
from tunelab.report.rundata import RunFiles

# (run directory, texts) -> per text its explanation as JSON (`Explanation.to_json()`)
Explainer = Callable[[Any, list[str]], list[dict[str, Any]]]
PER_KIND = 5  # rows of mistakes and of successes, at most
MARKED = 3  # words in [brackets] per text


def marked(item: dict[str, Any], k: int = MARKED) -> str:
    """The text with its `k` highest-scoring words (score > 0) in [brackets]."""
    best = sorted((w for w in item["words"] if w["score"] > 0), key=lambda w: -w["score"])[:k]
    text, out, at = item["text"], [], 0
    for w in sorted(best, key=lambda w: w["start"]):
        out += [text[at:w["start"]], f"[{text[w['start']:w['end']]}]"]
        at = w["end"]
    return "".join(out + [text[at:]])


def _top(item: dict[str, Any], sign: int, k: int = MARKED) -> str:
    words = sorted((w for w in item["words"] if sign * w["score"] > 0),
                   key=lambda w: -sign * w["score"])[:k]
    return ", ".join(f"{w['word']} {w['score']:+.3f}" for w in words) or "–"


def explanation_sections(run: RunFiles, explainer: Explainer | None, use_data: bool,
                         samples: int) -> list[Section]:
    """[] unless a classification run's dev data and an explainer are at hand."""
    if explainer is None or not use_data or run.task != "classification" or samples == 0:
        return []
    if not (run.dir / run.info["artifact"]).is_dir():
        return []
    _, dev = classification_stats(run)
    p = classification_predictions(run, dev)
    k = min(samples, PER_KIND)
    wrong = [i for i in range(len(p.gold)) if p.gold[i] != p.pred[i]][:k]
    right = [i for i in range(len(p.gold)) if p.gold[i] == p.pred[i]][:k]
    picked = wrong + right
    texts = [dev[i].text if dev[i].text_pair is None else f"{dev[i].text}\t{dev[i].text_pair}"
             for i in picked]
    items = explainer(run.dir, texts)
    rows: list[list[Any]] = []
    for i, item in zip(picked, items):
        rows.append([i + 1, "mistake" if i in wrong else "success", marked(item),
                     p.labels[p.gold[i]], p.labels[p.pred[i]], item["probability"],
                     _top(item, 1), _top(item, -1), item.get("completeness_error")])
    note = (f"Integrated gradients ({items[0]['method'] if items else 'ig'}) on the input "
            "embeddings, explaining the predicted label's probability; the baseline replaces "
            "every non-special sub-token with [PAD]. Sub-token attributions are summed per word. "
            "The completeness error is |sum of attributions - (p(text) - p(baseline))|. "
            "`tunelab explain RUN --faithfulness` measures how faithful these are.")
    return [Section("Explanations (dev)", [
        Para(note),
        Table("explanations", ["#", "kind", "text ([top words])", "gold", "predicted",
                               "probability", "for the prediction", "against",
                               "completeness error"], rows,
              caption=f"the first {len(wrong)} misclassified and {len(right)} correct dev "
                      "examples")])]

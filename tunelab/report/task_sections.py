"""The sections that differ by task: data statistics, and what the model predicts
(classification: confusion matrix and per-class scores; NER: per-entity scores and tagged
sentences; causal LM: sample generations; translation: sample translations with chrF)."""

from __future__ import annotations

from typing import Any

from tunelab.report.document import Para, Section, Table
from tunelab.report.predictions import (
    classification_predictions,
    classification_stats,
    ner_predictions,
    ner_stats,
    translation_stats,
)
from tunelab.report.rundata import RunFiles
from tunelab.report.sections import final_dev
from tunelab.tasks.metrics import classification_metrics, confusion
from tunelab.tasks.translation import translation_scores

NO_DATA = ("Not computed: the report was built with --no-data (from the run's files alone). "
           "Without it, `tunelab report` reloads the saved run and predicts its dev split.")


def _no_weights(run: RunFiles) -> str | None:
    """Why dev predictions cannot be made, or None when they can."""
    if not (run.dir / run.info["artifact"]).is_dir():
        return (f"Not computed: the run has no {run.info['artifact']}/ yet (unfinished); finish "
                "it with `tunelab train CONFIG --resume`.")
    return None


def _stats_blocks(stats: Any) -> list[Any]:
    return [Table("data-stats", stats.header, stats.rows), *(Para(n) for n in stats.notes)]


# ------------------------------------------------------------------------- classification

def classification(run: RunFiles, use_data: bool, n: int) -> list[Section]:
    if not use_data or _no_weights(run):
        return [Section("Dev predictions", [Para(_no_weights(run) if use_data else NO_DATA)])]
    from sklearn.metrics import precision_recall_fscore_support

    stats, dev = classification_stats(run)
    p = classification_predictions(run, dev)
    k = len(p.labels)
    matrix = confusion(p.pred, p.gold, k)
    ours = classification_metrics(p.pred, p.gold, k)
    saved = (final_dev(run) or {}).get("accuracy")
    check = ""
    if saved is not None:
        check = f"; summary.json says {saved:.4f}" + (
            "" if abs(saved - ours["accuracy"]) < 1e-6 else
            " (they differ: the dev data changed since training, or training scored in bf16)")
    conf = [Para(f"{len(p.gold)} dev examples predicted by the saved run; rows are the gold "
                 f"labels, columns the predictions. Accuracy from this matrix: "
                 f"{ours['accuracy']:.4f}{check}."),
            Table("confusion", ["gold \\ predicted", *p.labels],
                  [[label, *row] for label, row in zip(p.labels, matrix)], shade=True)]
    prec, rec, f1, support = precision_recall_fscore_support(p.gold, p.pred, labels=list(range(k)),
                                                             zero_division=0)
    rows: list[list[Any]] = [[label, float(prec[i]), float(rec[i]), float(f1[i]), int(support[i])]
                             for i, label in enumerate(p.labels)]
    present = sorted(set(p.gold) | set(p.pred))  # as classification_metrics averages
    macro = precision_recall_fscore_support(p.gold, p.pred, labels=present, average="macro",
                                            zero_division=0)
    rows.append(["macro average", float(macro[0]), float(macro[1]), ours["macro_f1"], len(p.gold)])
    per_class = [Table("per-class", ["label", "precision", "recall", "f1", "support"], rows,
                       caption="macro-F1 averages the labels that occur in gold or predictions")]

    def sample_rows(index: list[int]) -> list[list[Any]]:
        return [[i + 1, p.texts[i], p.labels[p.gold[i]], p.labels[p.pred[i]], p.prob[i]]
                for i in index]

    header = ["#", "text", "gold", "predicted", "probability"]
    wrong = [i for i in range(len(p.gold)) if p.gold[i] != p.pred[i]][:n]
    samples = [Table("samples", header, sample_rows(list(range(min(n, len(p.gold))))),
                     caption=f"the first {min(n, len(p.gold))} dev examples"),
               Table("mistakes", header, sample_rows(wrong),
                     caption=f"the first {len(wrong)} misclassified dev examples")]
    return [Section("Data", _stats_blocks(stats)), Section("Confusion matrix (dev)", conf),
            Section("Per-class scores (dev)", per_class), Section("Sample predictions", samples)]


# ---------------------------------------------------------------------------------- NER

def _entities(words: tuple[str, ...], tags: list[str]) -> str:
    from seqeval.metrics.sequence_labeling import get_entities

    return "; ".join(f"{kind}: {' '.join(words[a:b + 1])}" for kind, a, b in get_entities(tags))


def ner(run: RunFiles, use_data: bool, n: int) -> list[Section]:
    record = final_dev(run) or {}
    per_type = record.get("per_type") or {}
    rows: list[list[Any]] = [[kind, v["precision"], v["recall"], v["f1"], v["support"]]
                             for kind, v in sorted(per_type.items())]
    if "f1" in record:
        rows.append(["overall (micro)", record["precision"], record["recall"], record["f1"],
                     sum(v["support"] for v in per_type.values())])
    out = [Section("Entities per type (dev)", [
        Para("Entity-level scores by seqeval (an entity counts when its type and both boundaries "
             "match); support is the number of gold entities."),
        Table("per-entity", ["entity type", "precision", "recall", "f1", "support"], rows)])]
    if not use_data or _no_weights(run):
        why = _no_weights(run) if use_data else NO_DATA
        return out + [Section("Sample predictions", [Para(why)])]

    stats, dev = ner_stats(run)
    p = ner_predictions(run, dev)

    def sample_rows(index: list[int]) -> list[list[Any]]:
        return [[i + 1, " ".join(p.words[i]), _entities(p.words[i], p.gold[i]),
                 _entities(p.words[i], p.pred[i])] for i in index]

    header = ["#", "sentence", "gold entities", "predicted entities"]
    wrong = [i for i in range(len(p.gold)) if p.gold[i] != p.pred[i]][:n]
    first = list(range(min(n, len(p.gold))))
    return [Section("Data", _stats_blocks(stats)), *out, Section("Sample predictions", [
        Table("samples", header, sample_rows(first),
              caption=f"the first {len(first)} dev sentences"),
        Table("mistakes", header, sample_rows(wrong),
              caption=f"the first {len(wrong)} dev sentences with a wrong tag")])]


# ---------------------------------------------------------------------------- causal LM

def causal_lm(run: RunFiles, use_data: bool, n: int) -> list[Section]:
    stats = run.info.get("train_stats") or run.info.get("block_stats") or {}
    rows: list[list[Any]] = [[k.replace("_", " "), v] for k, v in stats.items() if v is not None]
    if run.summary:
        rows.append(["held-out examples", run.summary["dev_examples"]])
    out = [Section("Data", [Table("data-stats", ["", "train"], rows,
                                  caption="as counted when the run started (run.json)")])]
    samples = run.samples()
    if not samples:
        return out + [Section("Sample generations", [Para(
            "No samples/ in this run (data.samples was 0).")])]
    steps = sorted(samples)
    shown = [steps[0], steps[-1]] if len(steps) > 1 else steps
    first = samples[shown[0]]
    table = [[i + 1, r["prompt"], *(samples[s][i]["response"] if i < len(samples[s]) else None
                                    for s in shown)] for i, r in enumerate(first[:n])]
    return out + [Section("Sample generations", [
        Para("Greedy generations for held-out prompts, written at each evaluation "
             "(samples/step-N.jsonl): at the first and the last."),
        Table("samples", ["#", "prompt", *(f"step {s}" for s in shown)], table)])]


# ---------------------------------------------------------------------------- translation

def translation(run: RunFiles, use_data: bool, n: int) -> list[Section]:
    import sacrebleu

    rows = run.translations()
    if use_data:
        out = [Section("Data", _stats_blocks(translation_stats(run)))]
    else:
        d, s = run.config.get("data") or {}, run.summary or {}
        direction = f"{d.get('source_lang')} -> {d.get('target_lang')}"
        stats: list[list[Any]] = [["corpus", str(d.get("path"))], ["direction", direction],
                                  ["dev pairs (held-out loss)", s.get("dev_examples")],
                                  ["test pairs (BLEU / chrF)", len(rows)]]
        out = [Section("Data", [Table("data-stats", ["", "value"], stats)])]
    if not rows:
        return out + [Section("Sample translations", [Para("No test_translations.jsonl.")])]
    again = translation_scores([r["hypothesis"] for r in rows], [r["reference"] for r in rows])
    table = [[i + 1, r["source"], r["reference"], r["hypothesis"],
              sacrebleu.sentence_chrf(r["hypothesis"], [r["reference"]]).score]
             for i, r in enumerate(rows[:n])]
    return out + [Section("Sample translations", [
        Para(f"Test translations after training (test_translations.jsonl, {len(rows)} pairs): "
             f"corpus BLEU {again['bleu']:.2f}, chrF {again['chrf']:.2f} recomputed from the "
             "file; sentence chrF per row."),
        Table("translations", ["#", "source", "reference", "hypothesis", "chrF"], table)])]


# ---------------------------------------------------------------------------- masked LM

def masked_lm(run: RunFiles, use_data: bool, n: int) -> list[Section]:
    windows = run.info.get("windows") or {}
    rows: list[list[Any]] = [["train windows", windows.get("train")],
                             ["held-out windows", windows.get("held_out")],
                             ["texts spanning several windows", windows.get("split_texts")],
                             ["MLM head", run.info.get("mlm_head")]]
    return [Section("Data", [Table("data-stats", ["", "value"], rows,
                                   caption="as counted when the run started (run.json)")])]


TASKS = {"classification": classification, "token_classification": ner, "causal_lm": causal_lm,
         "translation": translation, "masked_lm": masked_lm,
         "image_classification": lambda run, use_data, samples: []}  # scores and curves only

"""Scores for fine-tuning: accuracy and macro-F1 for sentence classification; entity-level precision,
recall and F1 per type with micro/macro/weighted averages for BIO-tagged NER; both as a
classification-report table and as JSON-ready dicts.

Entities follow the CoNLL evaluation rules (as ``seqeval``'s default mode does): an entity starts at
``B-X``, or at ``I-X`` after ``O`` or after a tag of another type; it ends before ``O``, ``B-*`` or a
tag of another type. A predicted entity counts when its span and type both equal a true one.
Zero divisions (no predictions, no support) score 0.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def _averages(per: dict[str, dict], tp: int, n_pred: int, n_true: int) -> dict[str, dict]:
    p, r, f = _prf(tp, n_pred, n_true)
    names = list(per)
    total = sum(per[n]["support"] for n in names)
    out = {"micro avg": {"precision": p, "recall": r, "f1": f, "support": n_true}}
    if names:
        out["macro avg"] = {k: sum(per[n][k] for n in names) / len(names) for k in ("precision", "recall", "f1")}
        out["macro avg"]["support"] = total
        out["weighted avg"] = {k: (sum(per[n][k] * per[n]["support"] for n in names) / total if total else 0.0)
                               for k in ("precision", "recall", "f1")}
        out["weighted avg"]["support"] = total
    return out


def classification_scores(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and a per-class report for sentence classification (label ids -> names)."""
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    n = len(y_true)
    correct = sum(int(a == b) for a, b in zip(y_true, y_pred))
    per = {}
    for i, name in enumerate(labels):
        tp = sum(1 for a, b in zip(y_true, y_pred) if a == i and b == i)
        n_pred = sum(1 for b in y_pred if b == i)
        n_true = sum(1 for a in y_true if a == i)
        p, r, f = _prf(tp, n_pred, n_true)
        per[name] = {"precision": p, "recall": r, "f1": f, "support": n_true}
    avgs = _averages(per, correct, n, n)
    majority = max(Counter(y_true).values()) / n if n else 0.0
    return {"accuracy": correct / n if n else 0.0, "macro_f1": avgs["macro avg"]["f1"], "n": n,
            "majority_baseline": majority, "per_class": per, "averages": avgs}


def bio_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of every entity in one BIO tag sequence (CoNLL rules, see the module doc)."""
    entities = set()
    start, etype = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, ttype = tag.partition("-")
        if prefix not in ("B", "I"):
            prefix, ttype = "O", ""
        if start is not None and (prefix in ("O", "B") or ttype != etype):
            entities.add((etype, start, i - 1))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, etype = i, ttype
    return entities


def entity_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Entity-level P/R/F1 per type plus micro, macro and weighted averages, over many sentences."""
    if len(true_tags) != len(pred_tags):
        raise ValueError("true and predicted tag lists differ in the number of sentences")
    tp, n_pred, n_true = Counter(), Counter(), Counter()
    token_correct = token_total = 0
    for t, p in zip(true_tags, pred_tags):
        if len(t) != len(p):
            raise ValueError("a sentence's true and predicted tags differ in length")
        te, pe = bio_entities(t), bio_entities(p)
        for e in te:
            n_true[e[0]] += 1
        for e in pe:
            n_pred[e[0]] += 1
        for e in te & pe:
            tp[e[0]] += 1
        token_correct += sum(int(a == b) for a, b in zip(t, p))
        token_total += len(t)
    per = {}
    for etype in sorted(set(n_true) | set(n_pred)):
        p, r, f = _prf(tp[etype], n_pred[etype], n_true[etype])
        per[etype] = {"precision": p, "recall": r, "f1": f, "support": n_true[etype]}
    avgs = _averages(per, sum(tp.values()), sum(n_pred.values()), sum(n_true.values()))
    return {"f1": avgs["micro avg"]["f1"], "precision": avgs["micro avg"]["precision"],
            "recall": avgs["micro avg"]["recall"], "macro_f1": avgs.get("macro avg", {}).get("f1", 0.0),
            "token_accuracy": token_correct / token_total if token_total else 0.0,
            "n": len(true_tags), "per_class": per, "averages": avgs}


def report_table(scores: dict, digits: int = 4) -> str:
    """The familiar classification-report table (precision, recall, f1-score, support)."""
    rows = list(scores["per_class"].items())
    avgs = list(scores["averages"].items())
    width = max([len(n) for n, _ in rows + avgs] + [12])
    head = f"{'':>{width}}  {'precision':>9}  {'recall':>9}  {'f1-score':>9}  {'support':>9}"
    lines = [head, ""]

    def line(name, m):
        return (f"{name:>{width}}  {m['precision']:>9.{digits}f}  {m['recall']:>9.{digits}f}  "
                f"{m['f1']:>9.{digits}f}  {m['support']:>9d}")

    lines += [line(n, m) for n, m in rows]
    lines.append("")
    lines += [line(n, m) for n, m in avgs]
    if "accuracy" in scores:
        lines.append(f"{'accuracy':>{width}}  {'':>9}  {'':>9}  {scores['accuracy']:>9.{digits}f}  {scores['n']:>9d}")
    return "\n".join(lines)

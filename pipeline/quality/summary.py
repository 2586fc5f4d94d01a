"""The quality layer's section of report.json: score histogram and cut-off, contamination per task, PII per kind.

Computed by the driver after a run from the signal columns of the written shards (``documents/`` and
``rejected/``; the quality stages put their columns on kept and rejected documents alike), so it needs no
counters inside the stages and works for local and ``gs://`` runs. A document rejected before a quality
stage has null columns for it and is not counted there. With ``write_rejected: false`` only kept documents
are seen (``"complete": false`` then).

    report["quality"] = {
      "quality_classifier": {"documents", "kept", "rejected", "cutoff", "rule", "histogram":
                             {"edges", "kept", "rejected"}},
      "decontaminate": {"documents", "documents_matched", "removed_chars", "rejected": {reason: n},
                        "tasks": {task: {"documents", "ngrams"}}},
      "pii": {"documents", "documents_with_pii", "replaced": {kind: n}, "documents_per_kind": {kind: n}},
    }
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

QUALITY_STAGES = ("quality_classifier", "decontaminate", "pii")
HIST_BINS = 50


def _columns(out_dir: str, kind: str, entries: Sequence[Mapping], wanted: Sequence[str]) -> Dict[str, List]:
    from pipeline.io import fs
    from pipeline.io.shards import read_table

    cols: Dict[str, List] = {c: [] for c in wanted}
    for e in entries:
        if not e.get("rows"):
            continue
        table = read_table(fs.join(out_dir, kind, e["name"]))
        for c in wanted:
            cols[c].extend(table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows)
    return cols


def quality_sections(out_dir: str, stages: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """report.json's ``quality`` section for the quality stages among ``stages`` (``[{name, params}]``)."""
    by_name = {s["name"]: s.get("params", {}) for s in stages if s["name"] in QUALITY_STAGES}
    if not by_name:
        return {}
    wanted = ["reason", "quality_score", "quality_cutoff", "decontam_ngrams", "decontam_removed_chars"]
    tasks = list(by_name.get("decontaminate", {}).get("tasks", []))
    kinds = list(by_name.get("pii", {}).get("kinds", []))
    wanted += [f"decontam_{t}" for t in tasks] + [f"pii_{k}" for k in kinds]
    kept = _columns(out_dir, "documents", manifest.get("documents", []), wanted)
    rej = _columns(out_dir, "rejected", manifest.get("rejected", []), wanted)
    n_kept = len(kept["reason"])
    rows = {c: kept[c] + rej[c] for c in wanted}
    reasons = [None] * n_kept + rej["reason"]
    out: Dict[str, Any] = {"complete": "rejected" in manifest}

    if "quality_classifier" in by_name:
        p = by_name["quality_classifier"]
        scores = np.array([np.nan if s is None else s for s in rows["quality_score"]], dtype=np.float64)
        seen = ~np.isnan(scores)
        by_clf = np.array([bool(r) and r.startswith("quality_classifier:") for r in reasons])
        cut = {c for c, ok in zip(rows["quality_cutoff"], seen) if ok and c is not None}
        edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
        out["quality_classifier"] = {
            "documents": int(seen.sum()), "kept": int((seen & ~by_clf).sum()), "rejected": int((seen & by_clf).sum()),
            "rule": f"keep_top {p['keep_top']}" if p.get("keep_top") is not None else f"threshold {p.get('threshold')}",
            "cutoff": (min(cut) if cut else None),
            "histogram": {"edges": [round(float(e), 4) for e in edges],
                          "kept": np.histogram(scores[seen & ~by_clf], edges)[0].tolist(),
                          "rejected": np.histogram(scores[seen & by_clf], edges)[0].tolist()},
        }
    if "decontaminate" in by_name:
        seen = [v is not None for v in rows["decontam_ngrams"]]
        section = {"documents": sum(seen), "documents_matched": sum(1 for v in rows["decontam_ngrams"] if v),
                   "removed_chars": int(sum(v or 0 for v in rows["decontam_removed_chars"])),
                   "mode": by_name["decontaminate"].get("mode"),
                   "rejected": {}, "tasks": {}}
        for r in reasons:
            if r and r.startswith("decontaminate:"):
                section["rejected"][r] = section["rejected"].get(r, 0) + 1
        for t in tasks:
            vals = rows[f"decontam_{t}"]
            section["tasks"][t] = {"documents": sum(1 for v in vals if v), "ngrams": int(sum(v or 0 for v in vals))}
        out["decontaminate"] = section
    if "pii" in by_name:
        cols = [rows[f"pii_{k}"] for k in kinds]
        seen_rows = [any(c[i] is not None for c in cols) for i in range(len(reasons))] if cols else []
        out["pii"] = {
            "documents": sum(seen_rows),
            "documents_with_pii": sum(1 for i in range(len(reasons)) if any(c[i] for c in cols)),
            "replaced": {k: int(sum(v or 0 for v in rows[f"pii_{k}"])) for k in kinds},
            "documents_per_kind": {k: sum(1 for v in rows[f"pii_{k}"] if v) for k in kinds},
        }
    return out

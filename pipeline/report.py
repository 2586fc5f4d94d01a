"""The funnel: per-stage counts -> report.json and funnel.png, with the accounting invariants checked.

report.json shape (read by tools and notebooks):

    {"pipeline": str, "input_documents": int, "output_documents": int,
     "stages": [{"name": str, "in": int, "kept": int, "rejected": {reason: int}}], ...}

Invariants: ``in == kept + sum(rejected)`` for every stage, each stage's ``in`` equals the previous stage's
``kept``, and ``input_documents == output_documents + all rejections``. A run with named inputs
(``--input web=... --input wiki=...``) adds ``"sources": {name: {...same shape...}}``: the funnel of each
source, which must satisfy the same invariants and add up to the total, stage by stage and reason by reason. ``check_report`` raises
``AccountingError`` when one fails; the run then fails loudly instead of publishing a wrong funnel.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

# RefinedWeb (Penedo et al. 2023, Fig. 2 / REFERENCE.md): % of Common Crawl kept after each stage.
# Documents up to language ID, tokens after. Keys are our stage names.
PAPER_FUNNEL = {
    "url_filter": 97.76,
    "extract": 96.31,
    "langid": 47.51,
    "gopher_repetition": 35.97,
    "gopher_quality": 30.15,
    "line_corrections": 23.34,
    "minhash_dedup": 14.50,
    "substring_dedup": 11.67,
}


class AccountingError(RuntimeError):
    """The counts do not add up: a document was lost or counted twice."""


def build_report(pipeline: str, stage_names: Sequence[str], counters: Mapping[str, int], read_stage: str = "read") -> Dict[str, Any]:
    """Turn ``<stage>|in``/``<stage>|kept``/``<stage>|rejected|<reason>`` counters into the report dict."""
    stages: List[Dict[str, Any]] = []
    for name in [read_stage, *stage_names]:
        rejected: Dict[str, int] = {}
        prefix = f"{name}|rejected|"
        for key, value in counters.items():
            if key.startswith(prefix) and value:
                rejected[key[len(prefix):]] = int(value)
        stages.append({
            "name": name,
            "in": int(counters.get(f"{name}|in", 0)),
            "kept": int(counters.get(f"{name}|kept", 0)),
            "rejected": dict(sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))),
        })
    input_documents = stages[0]["in"]
    output_documents = stages[-1]["kept"]
    for s in stages:
        s["kept_of_input_pct"] = round(100.0 * s["kept"] / input_documents, 3) if input_documents else 0.0
    diagnostics = {k.split("|", 2)[2]: v for k, v in counters.items() if k.startswith("diagnostics|")}
    report = {
        "pipeline": pipeline,
        "input_documents": input_documents,
        "output_documents": output_documents,
        "rejected_documents": sum(sum(s["rejected"].values()) for s in stages),
        "stages": stages,
        "diagnostics": dict(sorted(diagnostics.items())),
    }
    per_source: Dict[str, Dict[str, int]] = {}
    for key, value in counters.items():  # source=<name>|<stage>|... (pipeline/beam.py, named inputs)
        if key.startswith(SOURCE_COUNTER_PREFIX):
            name, rest = key[len(SOURCE_COUNTER_PREFIX):].split("|", 1)
            per_source.setdefault(name, {})[rest] = value
    if per_source:
        report["sources"] = {}
        for name in sorted(per_source):
            sub = build_report(pipeline, stage_names, per_source[name], read_stage)
            sub.pop("diagnostics", None)
            report["sources"][name] = sub
    return report


SOURCE_COUNTER_PREFIX = "source="


def check_report(report: Mapping[str, Any]) -> None:
    """Raise AccountingError unless every invariant holds."""
    prev_kept: Optional[int] = None
    for s in report["stages"]:
        total = s["kept"] + sum(s["rejected"].values())
        if s["in"] != total:
            raise AccountingError(f"stage {s['name']}: in={s['in']} but kept+rejected={total}")
        if prev_kept is not None and s["in"] != prev_kept:
            raise AccountingError(f"stage {s['name']}: in={s['in']} but the previous stage kept {prev_kept}")
        prev_kept = s["kept"]
    rejected = sum(sum(s["rejected"].values()) for s in report["stages"])
    if report["input_documents"] != report["output_documents"] + rejected:
        raise AccountingError(
            f"input {report['input_documents']} != output {report['output_documents']} + rejected {rejected}"
        )
    sources = report.get("sources") or {}
    for name, sub in sources.items():
        try:
            check_report(sub)
        except AccountingError as e:
            raise AccountingError(f"source {name}: {e}") from e
    if sources:
        for i, s in enumerate(report["stages"]):
            parts = [sub["stages"][i] for sub in sources.values()]
            for what in ("in", "kept"):
                if sum(p[what] for p in parts) != s[what]:
                    raise AccountingError(f"stage {s['name']}: the sources' '{what}' add up to "
                                          f"{sum(p[what] for p in parts)}, the total is {s[what]}")
            for reason, n in s["rejected"].items():
                if sum(p["rejected"].get(reason, 0) for p in parts) != n:
                    raise AccountingError(f"stage {s['name']}: the sources' '{reason}' rejections do not add up to {n}")


def cross_check_manifest(report: Mapping[str, Any], manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """Double entry: rows written to documents/ and rejected/ must equal the counted totals."""
    written_docs = sum(e["rows"] for e in manifest.get("documents", []))
    if written_docs != report["output_documents"]:
        raise AccountingError(f"documents/ holds {written_docs} rows but the counters say {report['output_documents']}")
    result = {"documents_rows": written_docs}
    if "rejected" in manifest:
        written_rej = sum(e["rows"] for e in manifest["rejected"])
        if written_rej != report["rejected_documents"]:
            raise AccountingError(f"rejected/ holds {written_rej} rows but the counters say {report['rejected_documents']}")
        result["rejected_rows"] = written_rej
    return result


def write_report(report: Mapping[str, Any], out_dir: str) -> str:
    from pipeline.io.shards import write_json_atomically

    from pipeline.io import fs

    path = fs.join(out_dir, "report.json")
    write_json_atomically(report, path)
    return path


def draw_funnel(report: Mapping[str, Any], path: str, compare_paper: bool = True) -> str:
    """funnel.png: % of input documents kept after each stage, with RefinedWeb's funnel beside it."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's (e.g. a notebook's) backend alone

    stages = report["stages"]
    names = [s["name"] for s in stages]
    ours = [s["kept_of_input_pct"] for s in stages]
    fig = Figure(figsize=(max(7, 1.05 * len(names) + 2), 4.6), dpi=110)
    ax = fig.subplots()
    x = list(range(len(names)))
    width = 0.4 if compare_paper else 0.7
    bars = ax.bar([i - (width / 2 if compare_paper else 0) for i in x], ours, width, color="#2b6cb0", label=f"this run ({report['input_documents']:,} docs in)")
    for b, v in zip(bars, ours):
        ax.text(b.get_x() + b.get_width() / 2, v + 1, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    if compare_paper:
        paper = [PAPER_FUNNEL.get(n) for n in names]
        px = [i + width / 2 for i, v in zip(x, paper) if v is not None]
        pv = [v for v in paper if v is not None]
        if pv:
            ax.bar(px, pv, width, color="#dd6b20", alpha=0.8, label="RefinedWeb paper (% of CC)")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("% of input kept after stage")
    ax.set_ylim(0, 110)
    ax.set_title(f"Funnel: {report['pipeline']} -> {report['output_documents']:,} documents")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    import io

    from pipeline.io.shards import write_bytes_atomically

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomically(path, buf.getvalue())  # local or gs://..., never half a picture
    return path


def summary_text(report: Mapping[str, Any], out_dir: str, seconds: float) -> str:
    """The one-paragraph summary printed at the end of a run."""
    from pipeline.io import fs

    stages = report["stages"]
    biggest = sorted(
        ((reason, n) for s in stages for reason, n in s["rejected"].items()), key=lambda kv: -kv[1]
    )[:3]
    top = ", ".join(f"{r} {n:,}" for r, n in biggest) or "none"
    pct = 100.0 * report["output_documents"] / report["input_documents"] if report["input_documents"] else 0.0
    return (
        f"Pipeline '{report['pipeline']}' read {report['input_documents']:,} records and kept "
        f"{report['output_documents']:,} documents ({pct:.1f}%) in {seconds:.1f}s; "
        f"{report['rejected_documents']:,} were rejected with a reason (largest: {top}). "
        f"Every record is accounted for (in = kept + rejected at every stage). "
        f"Shards: {fs.join(out_dir, 'documents')}/, rejected: {fs.join(out_dir, 'rejected')}/, "
        f"report: {fs.join(out_dir, 'report.json')}, funnel: {fs.join(out_dir, 'funnel.png')}."
    )


def load_report(out_dir: str) -> Dict[str, Any]:
    """report.json of a run folder, local or on a Beam filesystem (gs://...)."""
    from pipeline.io import fs

    return json.loads(fs.read_bytes(fs.join(out_dir, "report.json")))

"""Pictures and tables of the quality layer for ``refinery report`` and notebook 01, from report.json alone.

``figure_quality_histogram``: the quality-score histogram (documents that passed the classifier vs those
it rejected) with the cut-off as a vertical line; ``figure_pii``: replacements per PII kind;
``contamination_rows``: per task, documents and n-grams matched; ``quality_html``: the report page's
section (writes the two pictures next to the page).
"""

from __future__ import annotations

import html
import os
from typing import Any, Mapping, Optional

KEPT_COLOR, REJECTED_COLOR, CUT_COLOR = "#2b6cb0", "#c53030", "#222222"


def figure_quality_histogram(section: Mapping[str, Any]):
    """Bars of the score histogram (kept blue, rejected red) and the cut-off line; None without data."""
    from matplotlib.figure import Figure

    hist = section.get("histogram") or {}
    edges = hist.get("edges") or []
    if not edges or not section.get("documents"):
        return None
    fig = Figure(figsize=(7.5, 3.4), dpi=110)
    ax = fig.subplots()
    width = edges[1] - edges[0]
    lefts = edges[:-1]
    ax.bar(lefts, hist["rejected"], width=width, align="edge", color=REJECTED_COLOR, alpha=0.75, label="rejected by the classifier")
    ax.bar(lefts, hist["kept"], width=width, align="edge", color=KEPT_COLOR, alpha=0.85, bottom=hist["rejected"],
           label="passed the classifier")
    cutoff = section.get("cutoff")
    if cutoff is not None:
        ax.axvline(cutoff, color=CUT_COLOR, linestyle="--", linewidth=1.2, label=f"cut-off {cutoff:.4g} ({section.get('rule')})")
    ax.set_xlim(0, 1)
    ax.set_xlabel("quality_score (probability of the positive label)")
    ax.set_ylabel("documents")
    ax.set_title(f"quality_classifier: {section['kept']:,} of {section['documents']:,} documents kept", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def figure_pii(section: Mapping[str, Any]):
    """Bars: PII replacements per kind (and documents with that kind); None without data."""
    from matplotlib.figure import Figure

    replaced = section.get("replaced") or {}
    if not replaced:
        return None
    kinds = list(replaced)
    fig = Figure(figsize=(5.5, 3.2), dpi=110)
    ax = fig.subplots()
    x = range(len(kinds))
    ax.bar([i - 0.2 for i in x], [replaced[k] for k in kinds], 0.4, color=KEPT_COLOR, label="replaced")
    ax.bar([i + 0.2 for i in x], [section.get("documents_per_kind", {}).get(k, 0) for k in kinds], 0.4,
           color="#dd6b20", label="documents")
    ax.set_xticks(list(x))
    ax.set_xticklabels(kinds)
    ax.set_title(f"pii: {section.get('documents_with_pii', 0):,} of {section.get('documents', 0):,} documents had PII", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def contamination_rows(section: Mapping[str, Any]) -> list:
    """[(task, documents matched, n-grams matched)] in the stage's task order."""
    return [(t, v["documents"], v["ngrams"]) for t, v in (section.get("tasks") or {}).items()]


def _save(fig, path: str) -> Optional[str]:
    if fig is None:
        return None
    fig.savefig(path)
    return path


def quality_html(report: Mapping[str, Any], out_dir: str) -> str:
    """The report page's "Quality layer" section ("" when the run has no quality stage)."""
    q = report.get("quality") or {}
    if not q:
        return ""
    esc = html.escape
    parts = ['<h2 id="quality">Quality layer</h2>']
    if not q.get("complete", True):
        parts.append("<p class=muted>rejected/ was not written: counts cover kept documents only.</p>")
    if "quality_classifier" in q:
        s = q["quality_classifier"]
        p = _save(figure_quality_histogram(s), os.path.join(out_dir, "quality_scores.png"))
        parts.append(f"<p>Quality classifier ({esc(str(s.get('rule')))}): {s['kept']:,} of {s['documents']:,} scored documents "
                     f"passed; cut-off <code>{s.get('cutoff')}</code>.</p>")
        if p:
            parts.append(f'<figure><img src="{esc(os.path.basename(p))}" alt="quality scores"><figcaption>'
                         "quality_score of every document that reached the classifier; dashed: the cut-off.</figcaption></figure>")
    if "decontaminate" in q:
        s = q["decontaminate"]
        rows = "".join(f"<tr><td>{esc(t)}</td><td>{d:,}</td><td>{g:,}</td></tr>" for t, d, g in contamination_rows(s))
        rej = ", ".join(f"{esc(r)} {n:,}" for r, n in s.get("rejected", {}).items()) or "none"
        parts.append(f"<p>Decontamination ({esc(str(s.get('mode')))} mode): {s['documents_matched']:,} of {s['documents']:,} "
                     f"documents contained an evaluation n-gram; {s['removed_chars']:,} characters cut; rejected: {rej}.</p>"
                     f"<table><tr><th>task</th><th>documents</th><th>n-grams matched</th></tr>{rows}</table>")
    if "pii" in q:
        s = q["pii"]
        p = _save(figure_pii(s), os.path.join(out_dir, "pii.png"))
        kinds = ", ".join(f"{esc(k)} {n:,}" for k, n in s.get("replaced", {}).items())
        parts.append(f"<p>PII replaced: {kinds} (in {s.get('documents_with_pii', 0):,} of {s.get('documents', 0):,} documents).</p>")
        if p:
            parts.append(f'<figure><img src="{esc(os.path.basename(p))}" alt="pii counts"></figure>')
    return "\n".join(parts)

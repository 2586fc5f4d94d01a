"""``refinery report OUT/``: a static HTML page (with PNGs) of a run's funnel, signals and rejections.

For people who do not use notebooks: open ``OUT/report/index.html`` in a browser. The page shows the funnel
beside RefinedWeb's, the per-stage table of reasons, histograms of every numeric quality signal (kept vs
rejected documents), languages, top domains, and a few rejected documents per reason so that any filter
decision can be eyeballed.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

from pipeline.report import draw_funnel, load_report

CORE = {"id", "url", "text", "source", "warc_date", "record_offset", "reason"}


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="OUT", help="output folder of `refinery run` (holds report.json)")
    parser.add_argument("--out", default=None, metavar="DIR", help="where to write the page (default: OUT/report)")
    parser.add_argument("--samples", type=int, default=3, help="rejected documents shown per reason")
    parser.add_argument("--max-rows", type=int, default=200_000, help="rows read per table for the charts")


def _load_table(path: str, max_rows: int):
    from pipeline.io.shards import list_shards, read_table

    try:
        list_shards(path)
    except FileNotFoundError:
        return None
    table = read_table(path)
    return table.slice(0, max_rows) if table.num_rows > max_rows else table


def _numeric_columns(table) -> List[str]:
    import pyarrow as pa

    if table is None:
        return []
    return [f.name for f in table.schema if f.name not in CORE and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]


def _draw_signals(docs, rejected, path: str) -> Optional[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = sorted(set(_numeric_columns(docs)) | set(_numeric_columns(rejected)))
    if not cols:
        return None
    ncol = 4
    nrow = (len(cols) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 2.6 * nrow), dpi=90, squeeze=False)
    for ax, col in zip(axes.flat, cols):
        series = []
        for table, label, color in ((docs, "kept", "#2b6cb0"), (rejected, "rejected", "#c53030")):
            if table is not None and col in table.schema.names:
                vals = np.array([v for v in table.column(col).to_pylist() if v is not None], dtype=float)
                vals = vals[np.isfinite(vals)]
                if vals.size:
                    series.append((vals, label, color))
        if not series:
            ax.set_visible(False)
            continue
        lo = min(s[0].min() for s in series)
        hi = max(s[0].max() for s in series)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
        for vals, label, color in series:
            ax.hist(vals, bins=bins, alpha=0.55, color=color, label=f"{label} ({vals.size})")
        ax.set_title(col, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(cols):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw_bars(counter: Counter, title: str, path: str, top: int = 15) -> Optional[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = counter.most_common(top)
    if not items:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * len(items) + 1.2), dpi=90)
    labels = [str(k) for k, _ in items][::-1]
    ax.barh(labels, [v for _, v in items][::-1], color="#2b6cb0")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def render(run_dir: str, out_dir: Optional[str] = None, samples: int = 3, max_rows: int = 200_000) -> str:
    """Write the page and its pictures; return the path of index.html."""
    report = load_report(run_dir)
    out_dir = out_dir or os.path.join(run_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    docs = _load_table(os.path.join(run_dir, "documents"), max_rows)
    rejected = _load_table(os.path.join(run_dir, "rejected"), max_rows)

    pictures = {"funnel": draw_funnel(report, os.path.join(out_dir, "funnel.png"))}
    pictures["signals"] = _draw_signals(docs, rejected, os.path.join(out_dir, "signals.png"))
    if docs is not None and "language" in docs.schema.names:
        langs = Counter(docs.column("language").to_pylist())
        pictures["languages_kept"] = _draw_bars(langs, "languages of kept documents", os.path.join(out_dir, "languages.png"))
    if rejected is not None and "language" in rejected.schema.names:
        rl = Counter(v for v in rejected.column("language").to_pylist() if v)
        pictures["languages_rejected"] = _draw_bars(rl, "languages seen among rejected documents", os.path.join(out_dir, "languages_rejected.png"))
    if docs is not None:
        hosts = Counter(urlsplit(u).hostname or "?" for u in docs.column("url").to_pylist() if u)
        pictures["domains"] = _draw_bars(hosts, "top hosts of kept documents", os.path.join(out_dir, "domains.png"))

    esc = html.escape
    rows = []
    for s in report["stages"]:
        reasons = "<br>".join(f"{esc(r)}: {n:,}" for r, n in s["rejected"].items()) or "&ndash;"
        rows.append(f"<tr><td>{esc(s['name'])}</td><td>{s['in']:,}</td><td>{s['kept']:,}</td>"
                    f"<td>{s.get('kept_of_input_pct', 0):.1f}%</td><td class=r>{reasons}</td></tr>")
    sample_html = []
    if rejected is not None and rejected.num_rows:
        by_reason: Dict[str, List[Dict[str, Any]]] = {}
        for row in rejected.select([c for c in ("reason", "url", "text") if c in rejected.schema.names]).to_pylist():
            bucket = by_reason.setdefault(row["reason"], [])
            if len(bucket) < samples:
                bucket.append(row)
        for reason in sorted(by_reason):
            items = "".join(
                f"<li><a href='{esc(r.get('url') or '')}'>{esc((r.get('url') or '(no url)')[:120])}</a>"
                f"<pre>{esc((r.get('text') or '(no text: rejected before extraction)')[:600])}</pre></li>"
                for r in by_reason[reason]
            )
            sample_html.append(f"<h3>{esc(reason)}</h3><ul>{items}</ul>")
    imgs = "".join(
        f"<figure><img src='{os.path.basename(p)}' alt='{k}'><figcaption>{k}</figcaption></figure>"
        for k, p in pictures.items() if p
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>webrefinery report: {esc(report['pipeline'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#1a202c}}
table{{border-collapse:collapse}}td,th{{border:1px solid #cbd5e0;padding:4px 8px;text-align:right}}
td.r{{text-align:left;font-size:90%}}figure{{display:inline-block;margin:8px}}img{{max-width:100%}}
pre{{white-space:pre-wrap;background:#f7fafc;padding:6px;font-size:85%;max-height:12em;overflow:auto}}</style></head><body>
<h1>Pipeline <code>{esc(report['pipeline'])}</code></h1>
<p>{report['input_documents']:,} records in, {report['output_documents']:,} documents kept,
{report['rejected_documents']:,} rejected with a reason. Every record is accounted for.</p>
<h2>Funnel</h2><table><tr><th>stage</th><th>in</th><th>kept</th><th>kept of input</th><th>rejected by reason</th></tr>{''.join(rows)}</table>
<h2>Pictures</h2>{imgs}
<h2>Rejected documents, by reason (first {samples} of each)</h2>{''.join(sample_html) or '<p>none</p>'}
<p style="color:#718096">report.json: <code>{esc(json.dumps({k: report[k] for k in ('input_documents', 'output_documents')}))}</code></p>
</body></html>"""
    index = os.path.join(out_dir, "index.html")
    with open(index, "w", encoding="utf-8") as fh:
        fh.write(page)
    return index


def run(args) -> int:
    index = render(args.run_dir, args.out, args.samples, args.max_rows)
    print(f"wrote {index}")
    return 0

"""``refinery report OUT/``: a static HTML page (with PNGs) of a run's funnel, signals and rejections.

For people who do not use notebooks: open ``OUT/report/index.html`` in a browser. The page shows the funnel
beside RefinedWeb's, the per-stage table of reasons, the quality signals with the run's own thresholds drawn
on them (documents that passed a stage vs documents that stage rejected), languages, top hosts, and a few
rejected documents per reason with the signal values that decided them, so that any filter decision can be
eyeballed. Everything a document brings (text, URL) is HTML-escaped; only http(s) URLs become links.

The helpers that tie a stage's parameters to the column it thresholds (``threshold_signals``,
``signal_columns_for_reason``) read the stages' declared rules (``pipeline.stages.base``) and are shared with
the notebooks in ``notebooks/``.

The figures of this module are built with matplotlib's object API (``matplotlib.figure.Figure``), never
through ``pyplot``, so a notebook can display them (``display(fig)``) without its plotting backend being
changed. (``render`` also calls ``pipeline.report.draw_funnel``, which selects the Agg backend.)
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from pipeline.report import PAPER_FUNNEL, draw_funnel, load_report

CORE = {"id", "url", "text", "source", "warc_date", "record_offset", "reason"}

# Column prefix of the signals a stage writes, when it is not simply "<stage>_" (only for stages that are not
# registered here, e.g. a run made by a newer version; registered stages declare their columns).
STAGE_COLUMN_PREFIX = {
    "gopher_quality": "gopher_",
    "gopher_repetition": "gopher_",
    "line_corrections": "lc_",
    "c4_filters": "c4_",
    "fineweb_filters": "fineweb_",
}
# Columns worth showing beside a rejected document when no threshold names its rule.
REASON_COLUMNS = {
    "url_filter": ("url_filter_hit", "url_soft_words"),
    "langid": ("language", "language_score"),
    "line_corrections": ("lc_removed_fraction", "lc_removed_words"),
    "exact_dedup": ("exact_dedup_group_size",),
    "url_dedup": ("url_dedup_group_size",),
    "minhash_dedup": ("minhash_cluster_size", "minhash_cluster"),
    "substring_dedup": ("substring_dedup_removed_tokens",),
}

KEPT_COLOR, REJECTED_COLOR, LATER_COLOR, PAPER_COLOR = "#2b6cb0", "#c53030", "#a0aec0", "#dd6b20"


@dataclasses.dataclass(frozen=True)
class Threshold:
    """One filter threshold of a run: ``stage.param = value`` applied to ``column`` as a lower or upper bound."""

    stage: str
    param: str
    column: str
    value: float
    bound: str  # "min": a document needs column >= value; "max": column <= value
    rule: str = ""  # the rule this threshold decides (the reason is "<stage>:<rule>")
    keep: str = ""  # the declared comparison a kept document satisfies (">=", ">", "<=", "<")

    def breaks(self, value: Any) -> bool:
        """True when ``value`` is rejected at this threshold."""
        if self.keep in (">", "<"):
            return value <= self.value if self.keep == ">" else value >= self.value
        return value < self.value if self.bound == "min" else value > self.value

    def label(self) -> str:
        return f"{self.stage}.{self.param} = {self.value:g}"


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="OUT", help="output folder of `refinery run` (holds report.json); local or "
                                                       "on a Beam filesystem (gs://...)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="local folder for the page (default: OUT/report, or ./report-NAME for a gs:// run)")
    parser.add_argument("--samples", type=int, default=3, help="rejected documents shown per reason")
    parser.add_argument("--max-rows", type=int, default=200_000, help="rows read per table for the charts")


# ---------------------------------------------------------------------------------------------
# reading a run


def load_run_manifest(run_dir: str) -> Dict[str, Any]:
    """``OUT/manifest.json`` (shards, and the stages with their parameters), or {} when it is missing."""
    from pipeline.io import fs

    path = fs.join(run_dir, "manifest.json")
    if not fs.exists(path):
        return {}
    return json.loads(fs.read_bytes(path))


def stage_params(manifest: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """{stage name: params} from a run manifest (stages in pipeline order)."""
    return {s["name"]: dict(s.get("params") or {}) for s in manifest.get("stages", [])}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _registry() -> Dict[str, Any]:
    from pipeline.stages import load_all

    return load_all()


def threshold_signals(manifest: Mapping[str, Any], columns: Iterable[str]) -> List[Threshold]:
    """The run's numeric filter parameters that threshold a column present in ``columns``.

    They come from the stages' declared rules (``pipeline.stages.base.Rule``: rule, column, comparison,
    parameter), with the values the run used (manifest.json): ``gopher_quality.min_words = 50`` thresholds
    ``gopher_words`` from below, ``langid.threshold`` thresholds ``language_score``.
    """
    cols = set(columns)
    registry = _registry()
    out: List[Threshold] = []
    for stage, params in stage_params(manifest).items():
        cls = registry.get(stage)
        for rule in getattr(cls, "rules", ()):
            value = params.get(rule.param_name) if rule.param_name else None
            if rule.bound and rule.column in cols and _is_number(value):
                out.append(Threshold(stage, rule.param_name, rule.column, float(value), rule.bound, rule.name, rule.keep))
    return out


def signal_columns_for_reason(reason: str, thresholds: Sequence[Threshold], columns: Iterable[str]) -> List[str]:
    """Columns that explain a rejection ``<stage>:<rule>`` (the thresholded signal first)."""
    cols = list(columns)
    stage, _, rule = reason.partition(":")
    found = [t.column for t in thresholds if t.stage == stage and rule and t.rule == rule]
    cls = _registry().get(stage)
    found += [r.column for r in getattr(cls, "rules", ()) if r.name == rule and r.column in cols]  # flags ("falsy")
    found += [c for c in REASON_COLUMNS.get(stage, ()) if c in cols]
    if not found:
        if cls is not None:
            found = [c for c in cols if c in cls.columns][:4]
        else:
            prefix = STAGE_COLUMN_PREFIX.get(stage, f"{stage}_")
            found = [c for c in cols if c.startswith(prefix)][:4]
    return list(dict.fromkeys(found))


def _load_table(path: str, max_rows: int, columns: Optional[Sequence[str]] = None):
    """The shards of ``path`` as one table (at most ``max_rows`` rows, optionally only ``columns``), or None."""
    import pyarrow.dataset as ds

    from pipeline.io.shards import list_shards

    try:
        files = list_shards(path)
    except FileNotFoundError:
        return None
    if "://" in path:  # a Beam filesystem: read shard by shard (pyarrow's own filesystems may not know it)
        import pyarrow as pa

        from pipeline.io.shards import read_table

        tables, rows = [], 0
        for f in files:
            if rows >= max_rows:
                break
            t = read_table(f)
            if columns is not None:
                t = t.select([c for c in columns if c in t.schema.names])
            tables.append(t.slice(0, max_rows - rows))
            rows += tables[-1].num_rows
        return pa.concat_tables(tables, promote_options="default") if tables else None
    dataset = ds.dataset(files, format="ipc")
    if columns is not None:
        columns = [c for c in columns if c in dataset.schema.names]
    return dataset.head(max_rows, columns=columns)


def _numeric_columns(table) -> List[str]:
    import pyarrow as pa

    if table is None:
        return []
    return [f.name for f in table.schema if f.name not in CORE and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]


def _values(table, column: str, mask=None):
    import numpy as np

    if table is None or column not in table.schema.names:
        return np.array([], dtype=float)
    arr = table.column(column).to_numpy(zero_copy_only=False).astype(float)  # nulls -> nan
    if mask is not None:
        arr = arr[mask]
    return arr[np.isfinite(arr)]


def _reason_mask(rejected, stage: str):
    import numpy as np

    if rejected is None or "reason" not in rejected.schema.names:
        return np.zeros(0, dtype=bool)
    reasons = rejected.column("reason").to_pylist()
    return np.array([(r or "").startswith(stage + ":") for r in reasons], dtype=bool)


# ---------------------------------------------------------------------------------------------
# pictures


def _hist_bins(arrays, log: bool):
    import numpy as np

    values = np.concatenate([a for a in arrays if a.size]) if any(a.size for a in arrays) else np.array([0.0])
    lo, hi = float(values.min()), float(values.max())
    if log:
        lo = max(lo, 0.5)
        return np.geomspace(lo, max(hi, lo * 10), 40)
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, 40)


def _plain_ticks(ax) -> None:
    """No minor ticks: on log axes matplotlib labels many of them, which makes a grid of small charts slow to draw."""
    from matplotlib.ticker import NullLocator

    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_locator(NullLocator())


def figure_threshold_signals(docs, rejected, thresholds: Sequence[Threshold]):
    """A Figure: one histogram per thresholded signal, documents that passed the stage vs those it rejected.

    Only documents that reached the stage have the signal. The run's threshold is the dashed line. The count
    axis is logarithmic where one bin holds most documents (typical of repetition fractions), so that the
    tail the threshold cuts stays visible."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    by_column: Dict[str, List[Threshold]] = {}
    for t in thresholds:
        by_column.setdefault(t.column, []).append(t)
    if not by_column:
        return None
    ncol = min(4, len(by_column))
    nrow = (len(by_column) + ncol - 1) // ncol
    fig = Figure(figsize=(4.1 * ncol, 2.5 * nrow + 0.8), dpi=90, layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, (column, ts) in zip(axes.flat, by_column.items()):
        stage = ts[0].stage
        mask = _reason_mask(rejected, stage)
        by_stage = _values(rejected, column, mask) if mask.size else np.array([])
        later = _values(rejected, column, ~mask) if mask.size else np.array([])
        passed = np.concatenate([_values(docs, column), later])
        both = np.concatenate([passed, by_stage])
        log_x = bool(column.endswith("words") and both.size and both.max() > 1000)  # word counts span decades
        bins = _hist_bins([passed, by_stage], log_x)
        counts, _ = np.histogram(both, bins=bins)
        log_y = bool(both.size and counts.max() > 0.5 * both.size)
        ax.hist([passed, by_stage], bins=bins, stacked=True, color=[KEPT_COLOR, REJECTED_COLOR], log=log_y)
        for t in ts:
            ax.axvline(t.value, color="#1a202c", linestyle="--", linewidth=1.1)
            ax.text(t.value, 0.97, f" {t.bound} {t.value:g} ", transform=ax.get_xaxis_transform(), fontsize=7,
                    va="top", ha="left" if t.bound == "min" else "right",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=0.5))
        if log_x:
            ax.set_xscale("log")
        ax.set_title(f"{column}\n{stage}: {passed.size:,} passed, {by_stage.size:,} rejected", fontsize=8)
        ax.tick_params(labelsize=7)
        _plain_ticks(ax)
    for ax in list(axes.flat)[len(by_column):]:
        ax.set_visible(False)
    fig.legend(handles=[Patch(color=KEPT_COLOR, label="passed the stage (kept, or rejected later)"),
                        Patch(color=REJECTED_COLOR, label="rejected by the stage (this or another rule)"),
                        Line2D([], [], color="#1a202c", linestyle="--", label="the run's threshold")],
               loc="outside upper center", ncols=3, fontsize=8, frameon=False)
    return fig


def figure_other_signals(docs, rejected, exclude: Iterable[str]):
    """A Figure of the remaining numeric columns that vary (kept vs all rejected documents), or None."""
    import numpy as np
    from matplotlib.figure import Figure

    skip = set(exclude)
    cols = [c for c in sorted(set(_numeric_columns(docs)) | set(_numeric_columns(rejected))) if c not in skip]
    series = {}
    for c in cols:
        k, r = _values(docs, c), _values(rejected, c)
        both = np.concatenate([k, r])
        if both.size and both.min() != both.max():
            series[c] = (k, r)
    if not series:
        return None
    ncol = min(4, len(series))
    nrow = (len(series) + ncol - 1) // ncol
    fig = Figure(figsize=(4.1 * ncol, 2.4 * nrow + 0.6), dpi=80, layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, (c, (k, r)) in zip(axes.flat, series.items()):
        bins = _hist_bins([k, r], False)
        if k.size:
            ax.hist(k, bins=bins, alpha=0.6, color=KEPT_COLOR, label=f"kept ({k.size:,})")
        if r.size:
            ax.hist(r, bins=bins, alpha=0.6, color=REJECTED_COLOR, label=f"rejected ({r.size:,})")
        ax.set_yscale("log")
        ax.set_title(c, fontsize=9)
        ax.tick_params(labelsize=7)
        _plain_ticks(ax)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(series):]:
        ax.set_visible(False)
    fig.suptitle("Other per-document columns (log count): kept vs rejected documents", fontsize=10)
    return fig


def figure_bars(counter: Counter, title: str, top: int = 15, color: str = KEPT_COLOR):
    """A horizontal bar chart of the ``top`` most common keys of ``counter`` (None when it is empty)."""
    from matplotlib.figure import Figure

    items = counter.most_common(top)
    if not items:
        return None
    fig = Figure(figsize=(6.5, 0.28 * len(items) + 1.3), dpi=90)
    ax = fig.subplots()
    labels = [str(k) for k, _ in items][::-1]
    values = [v for _, v in items][::-1]
    bars = ax.barh(labels, values, color=color)
    for b, v in zip(bars, values):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:,}", va="center", fontsize=7)
    ax.set_xlim(0, max(values) * 1.15)
    total = sum(counter.values())
    ax.set_title(f"{title} (top {len(items)} of {len(counter):,}; {total:,} documents)", fontsize=9)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def _save(fig, path: str) -> Optional[str]:
    if fig is None:
        return None
    fig.savefig(path)
    return path


def host_of(url: Optional[str]) -> str:
    """The host of a URL without a leading ``www.`` ("?" when there is none)."""
    host = (urlsplit(url).hostname or "") if url else ""
    return (host[4:] if host.startswith("www.") else host) or "?"


# ---------------------------------------------------------------------------------------------
# rejected samples


def sample_rejected(path: str, reasons: Iterable[str], samples: int, columns: Sequence[str]) -> Dict[str, List[Dict[str, Any]]]:
    """Up to ``samples`` rejected rows per reason (in shard order), reading record batches only until every
    reason in ``reasons`` has its samples (the text of the whole rejected set is never held in memory)."""
    from pipeline.io.shards import list_shards

    wanted = {r: samples for r in reasons}
    out: Dict[str, List[Dict[str, Any]]] = {r: [] for r in wanted}
    if samples <= 0:
        return out
    try:
        files = list_shards(path)
    except FileNotFoundError:
        return out
    from pipeline.io.fs import open_arrow_file

    for f in files:
        reader = open_arrow_file(f)
        names = reader.schema.names
        cols = [c for c in dict.fromkeys(["reason", *columns]) if c in names]
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            reasons_in_batch = batch.column(names.index("reason")).to_pylist()
            for row_index, r in enumerate(reasons_in_batch):
                if r in out and len(out[r]) < wanted[r]:
                    row = {c: batch.column(names.index(c))[row_index].as_py() for c in cols}
                    out[r].append(row)
            if all(len(out[r]) >= wanted[r] for r in out):
                return out
    return out


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and len(value) > 40:
        return value[:37] + "..."
    return str(value)


def _link(url: Optional[str]) -> str:
    esc = html.escape
    if not url:
        return "<span class=muted>(no url)</span>"
    shown = esc(url if len(url) <= 140 else url[:137] + "...")
    if urlsplit(url).scheme.lower() in ("http", "https"):
        return f"<a href=\"{esc(url, quote=True)}\" rel=\"noopener noreferrer nofollow\">{shown}</a>"
    return f"<span>{shown}</span>"  # javascript:, data: ... are shown, never linked


def _threshold_note(column: str, value: Any, thresholds: Sequence[Threshold], stage: str) -> str:
    notes = []
    for t in thresholds:
        if t.column == column and t.stage == stage and _is_number(value):
            broken = t.breaks(value)
            notes.append(f"{t.bound} {t.value:g}{' ✗' if broken else ''}")
    return f" <span class=muted>({', '.join(notes)})</span>" if notes else ""


# ---------------------------------------------------------------------------------------------
# the page

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1250px;margin:1.5em auto;padding:0 1em;color:#1a202c;line-height:1.4}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #e2e8f0;padding-bottom:.2em}
nav a{margin-right:1em}.muted{color:#718096}
table.funnel{border-collapse:collapse;font-size:92%}
.funnel td,.funnel th{border:1px solid #cbd5e0;padding:3px 8px;text-align:right;vertical-align:top}
.funnel th{background:#edf2f7}.funnel td.l{text-align:left}.funnel td.r{text-align:left;font-size:90%}
.bar{background:linear-gradient(90deg,#bee3f8 var(--p),transparent var(--p))}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e2e8f0}figcaption{color:#4a5568;font-size:90%}
.pair{display:flex;flex-wrap:wrap;gap:1em}.pair figure{flex:1 1 45%}
details{margin:.4em 0;border:1px solid #e2e8f0;border-radius:4px;padding:.3em .8em}
summary{cursor:pointer;font-weight:600}summary .muted{font-weight:400}
.doc{margin:.6em 0 1em 0;overflow-wrap:anywhere}.sig{font-size:88%;color:#2d3748}
pre{white-space:pre-wrap;word-break:break-word;background:#f7fafc;padding:6px;font-size:84%;max-height:14em;overflow:auto;margin:.3em 0}
"""


def _funnel_rows(report: Mapping[str, Any]) -> str:
    esc = html.escape
    rows = []
    for s in report["stages"]:
        reasons = "<br>".join(f"{esc(r)}: {n:,}" for r, n in s["rejected"].items()) or "&ndash;"
        removed = s["in"] - s["kept"]
        removed_pct = f"{100.0 * removed / s['in']:.1f}%" if s["in"] else "&ndash;"
        pct = float(s.get("kept_of_input_pct", 0.0))
        paper = PAPER_FUNNEL.get(s["name"])
        rows.append(
            f"<tr><td class=l>{esc(s['name'])}</td><td>{s['in']:,}</td><td>{s['kept']:,}</td>"
            f"<td>{removed:,} ({removed_pct})</td><td class=bar style='--p:{min(pct, 100):.1f}%'>{pct:.1f}%</td>"
            f"<td>{'' if paper is None else f'{paper:.2f}%'}</td><td class=r>{reasons}</td></tr>"
        )
    return "".join(rows)


def sources_html(report: Mapping[str, Any]) -> str:
    """The funnel of every named source (``--input NAME=PATHS``), one table each; empty for plain runs."""
    sources = report.get("sources") or {}
    if not sources:
        return ""
    esc = html.escape
    head = ("<tr><th>stage</th><th>in</th><th>kept</th><th>removed here</th><th>kept of input</th>"
            "<th>RefinedWeb<br>(kept of CC)</th><th>rejected by reason</th></tr>")
    parts = ["<h3 id=sources>Per source</h3><p>Each source's funnel; they add up to the table above, stage by "
             "stage and reason by reason.</p>"]
    for name, sub in sources.items():
        parts.append(f"<h4>{esc(name)}: {sub['input_documents']:,} in, {sub['output_documents']:,} kept</h4>"
                     f"<table class=funnel>{head}{_funnel_rows(sub)}</table>")
    return "\n".join(parts)


def rejected_samples_html(report: Mapping[str, Any], by_reason: Mapping[str, List[Dict[str, Any]]],
                          thresholds: Sequence[Threshold], columns: Sequence[str]) -> str:
    """One ``<details>`` block per rejection reason (in pipeline order): each sampled document's link, source file,
    the signal values that decided it (with the threshold, ✗ when broken) and its escaped text."""
    esc = html.escape
    parts = []
    for s in report["stages"]:
        for reason, n in s["rejected"].items():
            rows = by_reason.get(reason) or []
            sig_cols = signal_columns_for_reason(reason, thresholds, columns)
            items = []
            for r in rows:
                sigs = "; ".join(
                    f"{esc(c)} = {esc(_format_value(r.get(c)))}{_threshold_note(c, r.get(c), thresholds, s['name'])}"
                    for c in sig_cols if r.get(c) is not None
                )
                text = r.get("text")
                text_html = esc(text[:700] + (" ..." if len(text) > 700 else "")) if text else \
                    "<span class=muted>(no text: rejected before extraction)</span>"
                source = os.path.basename(r.get("source") or "")
                items.append(
                    f"<div class=doc>{_link(r.get('url'))} <span class=muted>{esc(source)}</span>"
                    + (f"<div class=sig>{sigs}</div>" if sigs else "") + f"<pre>{text_html}</pre></div>"
                )
            shown = f"{len(rows)} of {n:,} shown" if n > len(rows) else f"all {n:,} shown"
            parts.append(f"<details><summary>{esc(reason)} <span class=muted>&mdash; {n:,} document{'s' if n != 1 else ''}, {shown}</span></summary>"
                         f"{''.join(items) or '<p class=muted>no sample found in rejected/</p>'}</details>")
    return "".join(parts) or "<p>none</p>"


def render(run_dir: str, out_dir: Optional[str] = None, samples: int = 3, max_rows: int = 200_000) -> str:
    """Write the page and its pictures; return the path of index.html."""
    esc = html.escape
    report = load_report(run_dir)
    manifest = load_run_manifest(run_dir)
    from pipeline.io import fs

    if out_dir is None:  # the page is local; a run on gs:// gets ./report-<run name>
        out_dir = f"report-{fs.basename(run_dir)}" if fs.is_remote(run_dir) else os.path.join(run_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    docs_dir, rej_dir = fs.join(run_dir, "documents"), fs.join(run_dir, "rejected")
    # charts read everything but the text (and cap the rows); samples read text only for a few rows
    chart_columns = None
    probe = _load_table(docs_dir, 1) or _load_table(rej_dir, 1)
    if probe is not None:
        chart_columns = [c for c in probe.schema.names if c != "text"] + ["reason"]
    docs = _load_table(docs_dir, max_rows, chart_columns)
    rejected = _load_table(rej_dir, max_rows, chart_columns)
    columns = sorted(set(docs.schema.names if docs is not None else []) | set(rejected.schema.names if rejected is not None else []))
    thresholds = threshold_signals(manifest, columns)
    from pipeline.quality.report_html import quality_html  # the quality layer's section (report.json "quality")

    def path(name: str) -> str:
        return os.path.join(out_dir, name)

    pictures: List[tuple] = []  # (section, file, caption)
    pictures.append(("funnel", draw_funnel(report, path("funnel.png")),
                     "Share of input documents kept after each stage (blue) beside RefinedWeb's (orange; % of Common Crawl, "
                     "documents up to language ID and tokens after)."))
    thr = _save(figure_threshold_signals(docs, rejected, thresholds), path("thresholds.png"))
    pictures.append(("signals", thr, "Each signal is computed only for documents that reached its stage. Blue: passed that "
                                     "stage (kept, or rejected later); red: rejected by that stage (by this or another rule)."))
    other = _save(figure_other_signals(docs, rejected, [t.column for t in thresholds]), path("signals.png"))
    pictures.append(("signals", other, "Other numeric columns the stages wrote."))
    if docs is not None and "language" in docs.schema.names:
        langs = Counter(v for v in docs.column("language").to_pylist() if v)
        pictures.append(("languages", _save(figure_bars(langs, "languages of kept documents"), path("languages.png")), ""))
    if rejected is not None and "language" in rejected.schema.names:
        rl = Counter(v for v in rejected.column("language").to_pylist() if v)
        pictures.append(("languages", _save(figure_bars(rl, "languages of rejected documents", color=REJECTED_COLOR),
                                            path("languages_rejected.png")), ""))
    if docs is not None and "url" in docs.schema.names:
        hosts = Counter(host_of(u) for u in docs.column("url").to_pylist() if u)
        pictures.append(("domains", _save(figure_bars(hosts, "top hosts of kept documents"), path("domains.png")), ""))
    if rejected is not None and "url" in rejected.schema.names:
        hosts = Counter(host_of(u) for u in rejected.column("url").to_pylist() if u)
        pictures.append(("domains", _save(figure_bars(hosts, "top hosts of rejected documents", color=REJECTED_COLOR),
                                          path("domains_rejected.png")), ""))

    def figures(section: str) -> str:
        figs = [f"<figure><img src=\"{esc(os.path.basename(p))}\" alt=\"{esc(os.path.basename(p))}\">"
                + (f"<figcaption>{esc(c)}</figcaption>" if c else "") + "</figure>"
                for sec, p, c in pictures if sec == section and p]
        if not figs:
            return "<p class=muted>no data for this section</p>"
        return f"<div class=pair>{''.join(figs)}</div>" if len(figs) > 1 and section in ("languages", "domains") else "".join(figs)

    reasons = [r for s in report["stages"] for r in s["rejected"]]
    sample_cols = ["url", "text", "source", *{c for r in reasons for c in signal_columns_for_reason(r, thresholds, columns)}]
    by_reason = sample_rejected(rej_dir, reasons, samples, sample_cols)
    thr_list = "".join(f"<li><code>{esc(t.label())}</code> on <code>{esc(t.column)}</code></li>" for t in thresholds)
    truncated = any(t is not None and t.num_rows >= max_rows for t in (docs, rejected))
    facts = []
    if report.get("seconds") is not None:
        facts.append(f"{report['seconds']:,.1f} s")
    if report.get("inputs") is not None:
        facts.append(f"{report['inputs']:,} input file(s)")
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>webrefinery report: {esc(report['pipeline'])}</title><style>{_STYLE}</style></head><body>
<h1>Pipeline <code>{esc(report['pipeline'])}</code></h1>
<p>{report['input_documents']:,} records in, <b>{report['output_documents']:,} documents kept</b>,
{report['rejected_documents']:,} rejected with a reason. Every record is accounted for
(in = kept + rejected at every stage).{' <span class=muted>(' + esc(', '.join(facts)) + ')</span>' if facts else ''}</p>
<nav><a href="#funnel">funnel</a><a href="#signals">signals</a><a href="#languages">languages</a><a href="#domains">domains</a>{'<a href="#quality">quality layer</a>' if report.get('quality') else ''}<a href="#rejected">rejected documents</a></nav>
<h2 id="funnel">Funnel</h2>
<table class="funnel"><tr><th>stage</th><th>in</th><th>kept</th><th>removed here</th><th>kept of input</th>
<th>RefinedWeb<br>(kept of CC)</th><th>rejected by reason</th></tr>{_funnel_rows(report)}</table>
{figures('funnel')}
{sources_html(report)}
<h2 id="signals">Quality signals</h2>
{'<p>Thresholds of this run (from manifest.json):</p><ul>' + thr_list + '</ul>' if thr_list else '<p class=muted>No thresholded signal found (manifest.json missing, or no filter stage in this pipeline).</p>'}
{'<p class=muted>Charts use the first ' + f'{max_rows:,}' + ' rows of each table.</p>' if truncated else ''}
{figures('signals')}
{quality_html(report, out_dir)}
<h2 id="languages">Languages</h2>{figures('languages')}
<h2 id="domains">Domains</h2>{figures('domains')}
<h2 id="rejected">Rejected documents, by reason</h2>
<p class=muted>Up to {samples} per reason, in shard order, with the signal values that decided them (✗ marks the broken threshold). Click a reason to open it.</p>
{rejected_samples_html(report, by_reason, thresholds, columns)}
<p class=muted>Written by <code>refinery report</code> from report.json, manifest.json, documents/ and rejected/.</p>
</body></html>"""
    index = os.path.join(out_dir, "index.html")
    with open(index, "w", encoding="utf-8") as fh:
        fh.write(page)
    return index


def run(args) -> int:
    index = render(args.run_dir, args.out, args.samples, args.max_rows)
    print(f"wrote {index}")
    return 0

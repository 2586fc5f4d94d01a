"""How a pipeline's cost grows with its input, per core, and what a whole Common Crawl dump would cost.

Input: real HTML pages from a shared WARC (default: the 181 English news articles of
``warc/news-articles-aeb.warc.gz``; ``--base-pages`` of them) written back to WARC files, plus
near-duplicate variants of every page (``--edit-fraction`` of the words in its visible text replaced
by other words of the same page, URL given a ``neardup=<k>`` query), so size k x holds each page and
k-1 near-copies: the dedup stages get real work, as they do on Common Crawl. Variant files are
generated once; size k reads variants 0..k-1.

For every size (``--sizes 1,2,4,8``) it measures, on one core:

1. the whole pipeline through ``pipeline.run.run_pipeline`` (embedded FnApiRunner; ``--beam-args``
   are passed on): wall time and documents/s;
2. each stage alone: reading (``iter_records``), every document stage in a plain loop with the
   semantics of ``pipeline.stages.base.run_stages`` (timed per stage; the first call, which pays lazy
   imports, is left out as worker start-up), every dedup stage through its own Beam transform
   (``pipeline.dedup.local.run_dedup``) on the documents that reach it.

Near-duplicates leave the dedup stages few distinct documents, and a small Beam pipeline's start-up
hides their per-document cost, so each dedup stage is also timed alone on ``--dedup-sizes`` distinct
documents (the texts that reached dedup, with ``--dedup-edit-fraction`` of their words changed).

A least-squares line ``t = a + b*n`` per stage and end to end separates fixed start-up cost (a) from
the marginal cost per document (b); the growth exponent ``log(t_max/t_min) / log(n_max/n_min)`` says
whether cost grows linearly (1.0), slower (start-up dominated) or faster (e.g. dedup clusters).

At size 1 it also measures the bytes every GroupByKey would shuffle (each GroupByKey is wrapped with a
counter of the bytes its input coder writes), i.e. what Dataflow Shuffle would bill.

Then it prints a cost model for one Common Crawl dump (``--pages`` 3e9 in ``--warc-files`` 90,000
WARCs of ``--warc-gb`` 1 GB compressed): core-hours per stage, workers and wall time on Dataflow
n2-standard-8/16 for ``--target-hours``, and dollars at the stated list prices (flags; check them),
beside the anchors: FineWeb (~8,000 tasks x 10 h per dump with datatrove) and C4 on Dataflow
(~341 CPU-days). Per-page costs are taken on the bench corpus, then (a) read and extraction are scaled
by the ratio of Common Crawl's compressed bytes per page to the bench's, (b) every stage is weighted by
the share of Common Crawl documents that reach it in RefinedWeb's published funnel (REFERENCE.md), and
the sum is multiplied by ``--beam-overhead`` (an assumption for coders, fusion and shard writing; the
measured end-to-end / stages ratio is printed, but at bench sizes it is dominated by Beam start-up).
The machine is shared: the load average is printed with the numbers. The result is a model, not a
measurement of Dataflow: say so when quoting it.

    .venv/bin/python bench/bench_scaling.py                       # refinedweb, 32 pages x 1,2,4,8 (~3-4 min)
    .venv/bin/python bench/bench_scaling.py --pipeline refinedweb_fast --base-pages 60 --json out/scaling.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.paths import require_shared  # noqa: E402

# RefinedWeb's funnel (REFERENCE.md section 1): % of Common Crawl kept after each stage (documents up
# to language ID, tokens after, which we read as documents). A stage missing here keeps everything.
from pipeline.report import PAPER_FUNNEL as PAPER_KEPT_AFTER  # noqa: E402

FINEWEB_CORE_HOURS = 8_000 * 10  # datatrove: ~8,000 tasks x ~10 h per dump (one core per task)
C4_CORE_HOURS = 341 * 24  # C4 on Dataflow: ~341 CPU-days (from WET text: no HTML extraction)
MACHINES = {"n2-standard-8": (8, 32.0), "n2-standard-16": (16, 64.0)}  # vCPUs, GB


# ------------------------------------------------------------------------------------------------
# Corpus: real pages and near-duplicate variants, written as WARC


@dataclasses.dataclass
class Page:
    url: str
    html: str
    warc_date: Optional[str]


def load_base_pages(warc: Path, count: int) -> List[Page]:
    """The first ``count`` HTML pages (with a URL) that the project's reader accepts from ``warc``."""
    from pipeline.io.readers import iter_records

    pages: List[Page] = []
    for doc, why in iter_records(str(warc)):
        if why is None and doc.get("url") and isinstance(doc.get("html"), str) and doc["html"].strip():
            pages.append(Page(doc["url"], doc["html"], doc.get("warc_date")))
            if len(pages) == count:
                break
    if len(pages) < count:
        raise SystemExit(f"{warc} holds only {len(pages)} usable HTML pages, fewer than --base-pages {count}")
    return pages


_TAG = re.compile(r"(<[^>]*>)")
_WORD = re.compile(r"[A-Za-z]{3,}")


def edit_visible_words(html: str, rng: random.Random, fraction: float) -> str:
    """``html`` with ``fraction`` of the words of its visible text (not in script/style) replaced by
    other words of the same page: a near-duplicate, as mirrors and boilerplate variants are."""
    parts = _TAG.split(html)
    vocab = [w for i, p in enumerate(parts) if i % 2 == 0 for w in _WORD.findall(p)]
    if not vocab:
        return html
    hidden = False
    for i, part in enumerate(parts):
        if i % 2 == 1:
            low = part[:8].lower()
            if low.startswith(("<script", "<style")):
                hidden = True
            elif low.startswith(("</script", "</style")):
                hidden = False
            continue
        if hidden or not part.strip():
            continue
        parts[i] = _WORD.sub(lambda m: rng.choice(vocab) if rng.random() < fraction else m.group(0), part)
    return "".join(parts)


def variant_url(url: str, k: int) -> str:
    return url if k == 0 else f"{url}{'&' if '?' in url else '?'}neardup={k}"


def write_variant_warc(path: Path, pages: Sequence[Page], k: int, fraction: float, seed: int) -> int:
    """Variant ``k`` of every page as a gzipped WARC of HTTP responses; returns the file size."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for i, page in enumerate(pages):
            html = page.html if k == 0 else edit_visible_words(page.html, random.Random(seed * 1_000_003 + i * 101 + k), fraction)
            body = html.encode("utf-8")
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
            url = variant_url(page.url, k)
            record_id = f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{url}#{k}')}>"
            headers = {"WARC-Record-ID": record_id, "WARC-Date": page.warc_date or "2024-05-20T00:00:00Z"}
            record = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http, warc_headers_dict=headers)
            writer.write_record(record)
    return path.stat().st_size


# ------------------------------------------------------------------------------------------------
# Measurements

OVERRIDES: Tuple[str, ...] = ()  # the --set overrides (e.g. extract.extractor=webrefinery), for every run of the pipeline


def time_pipeline_run(pipeline: str, files: Sequence[str], out_dir: Path, beam_args: Sequence[str]) -> Tuple[float, Dict[str, Any]]:
    """(wall seconds, report) of one ``run_pipeline`` over ``files``."""
    from pipeline.run import run_pipeline

    start = time.perf_counter()
    report = run_pipeline(pipeline, list(files), str(out_dir), overrides=OVERRIDES, beam_args=list(beam_args), force=True, draw=False)
    return time.perf_counter() - start, report


def time_stages_separately(pipeline: str, files: Sequence[str]) -> Tuple[Dict[str, Dict[str, float]], List[Dict[str, Any]]]:
    """({stage: {"in": docs entering, "seconds": time}} for reading and every stage, one at a time;
    the documents that reached the first dedup stage)."""
    from pipeline.config import get_pipeline
    from pipeline.dedup.local import run_dedup
    from pipeline.io.readers import iter_records
    from pipeline.stages.base import CollectionStage, apply_stage

    spec = get_pipeline(pipeline, overrides=OVERRIDES)
    stages = spec.build_stages()
    out: Dict[str, Dict[str, float]] = {}

    start = time.perf_counter()
    docs, records = [], 0
    for path in files:
        for doc, why in iter_records(path):
            records += 1
            if why is None:
                docs.append(doc)
    out["read"] = {"in": records, "seconds": time.perf_counter() - start}

    reaching_dedup: Optional[List[Dict[str, Any]]] = None
    for stage in stages:
        if isinstance(stage, CollectionStage):
            if reaching_dedup is None:
                reaching_dedup = list(docs)
            start = time.perf_counter()
            kept, _rejected, _metrics = run_dedup(stage.beam_transform(), docs)
            out[stage.name] = {"in": len(docs), "seconds": time.perf_counter() - start}
            docs = kept
            continue
        t0 = time.perf_counter()
        stage.setup()
        if docs:  # first call outside the clock: lazy imports and caches are per-worker start-up, not per-page cost
            apply_stage(stage, docs[0])
        setup_s = time.perf_counter() - t0
        start = time.perf_counter()
        kept = []
        for doc in docs:  # run_stages semantics: a copy per call, rejection stops the document
            doc, why = apply_stage(stage, doc)
            if why is None:
                kept.append(doc)
        out[stage.name] = {"in": len(docs), "seconds": time.perf_counter() - start, "setup_seconds": setup_s}
        docs = kept
    return out, (reaching_dedup if reaching_dedup is not None else docs)


def distinct_text_variants(docs: Sequence[Dict[str, Any]], count: int, fraction: float, seed: int) -> List[Dict[str, Any]]:
    """``count`` documents: ``docs`` first, then copies with ``fraction`` of their words replaced and a
    new id and URL, so that they are distinct documents for every dedup stage."""
    vocab = [w for d in docs for w in _WORD.findall(d.get("text") or "")]
    rng = random.Random(seed)
    out: List[Dict[str, Any]] = []
    for i in range(count):
        doc = dict(docs[i % len(docs)])
        k = i // len(docs)
        if k:
            doc["text"] = _WORD.sub(lambda m: rng.choice(vocab) if rng.random() < fraction else m.group(0), doc.get("text") or "")
            doc["id"] = f"{doc.get('id')}#{k}"
            doc["url"] = variant_url(doc.get("url") or "https://example.invalid/", 1000 + k)
        out.append(doc)
    return out


def time_dedup_marginal(pipeline: str, docs: Sequence[Dict[str, Any]], sizes: Sequence[int], fraction: float, seed: int) -> Dict[str, Dict[str, Any]]:
    """Every dedup stage alone on ``sizes`` distinct documents: {stage: {"sizes", "seconds", "s_per_doc"}}."""
    from pipeline.config import get_pipeline
    from pipeline.dedup.local import run_dedup
    from pipeline.stages.base import CollectionStage

    out: Dict[str, Dict[str, Any]] = {}
    sets = {n: distinct_text_variants(docs, n, fraction, seed) for n in sizes}
    for stage in get_pipeline(pipeline, overrides=OVERRIDES).build_stages():
        if not isinstance(stage, CollectionStage):
            continue
        seconds = []
        for n in sizes:
            start = time.perf_counter()
            run_dedup(stage.beam_transform(), sets[n])
            seconds.append(time.perf_counter() - start)
        a, b = fit_line(list(sizes), seconds)
        out[stage.name] = {"sizes": list(sizes), "seconds": seconds, "fixed_s": a, "s_per_doc": max(b, 0.0)}
    return out


def measure_shuffle_bytes(pipeline: str, files: Sequence[str], out_dir: Path) -> Dict[str, Dict[str, int]]:
    """{GroupByKey label: {"bytes", "elements"}}: what each GroupByKey's input coder writes, one run."""
    import apache_beam as beam
    from apache_beam import coders
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.pipeline import PTransformOverride
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipeline import beam as beam_mod
    from pipeline.config import get_pipeline

    class CountEncodedBytes(beam.DoFn):
        def __init__(self, label, coder):
            self.label, self.coder = label, coder

        def setup(self):
            self.nbytes = Metrics.counter("shuffle", self.label + "|bytes")
            self.count = Metrics.counter("shuffle", self.label + "|elements")

        def process(self, element):
            self.nbytes.inc(len(self.coder.encode(element)))
            self.count.inc()
            yield element

    class MeasuredGroupByKey(beam.PTransform):
        def __init__(self, label):
            super().__init__()
            self.label = label

        def expand(self, pcoll):
            coder = coders.registry.get_coder(pcoll.element_type or object)
            return (pcoll | "CountBytes" >> beam.ParDo(CountEncodedBytes(self.label, coder)).with_output_types(pcoll.element_type)
                    | "GroupByKey" >> beam.GroupByKey())

    class WrapGroupByKeys(PTransformOverride):
        def matches(self, applied):
            inside = applied.parent is not None and isinstance(applied.parent.transform, MeasuredGroupByKey)
            return isinstance(applied.transform, beam.GroupByKey) and not inside

        def get_replacement_transform_for_applied_ptransform(self, applied):
            return MeasuredGroupByKey(applied.full_label)

    spec = get_pipeline(pipeline, overrides=OVERRIDES)
    p = beam.Pipeline(runner=FnApiRunner())
    # the graph a remote runner gets (spread=True: Reshuffles after listing files and after reading)
    beam_mod.build_graph(p, spec.build_stages(), list(files), str(out_dir), spec.output, {"pipeline": pipeline}, None,
                         spec.read, spread=True)
    p.replace_all([WrapGroupByKeys()])
    result = p.run()
    result.wait_until_finish()
    found: Dict[str, Dict[str, int]] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace("shuffle"))["counters"]:
        label, what = c.key.metric.name.rsplit("|", 1)
        value = c.committed if c.committed is not None else c.attempted
        found.setdefault(label, {"bytes": 0, "elements": 0})[what] += int(value or 0)
    return found


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Tuple[float, float]:
    """Least squares ``y = a + b*x``: (a, b)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:  # every size gave the stage the same number of documents: no slope to fit
        return float("nan"), float("nan")
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def _per_second(seconds_per_doc: float) -> str:
    return f"{1.0 / seconds_per_doc:,.0f}" if seconds_per_doc > 0 else "-"


def growth_exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    if xs[0] <= 0 or ys[0] <= 0 or xs[-1] == xs[0]:
        return float("nan")
    return math.log(ys[-1] / ys[0]) / math.log(xs[-1] / xs[0])


# ------------------------------------------------------------------------------------------------
# Cost model


def paper_share_entering(stage_names: Sequence[str]) -> Dict[str, float]:
    """Share of Common Crawl documents that reach each stage, from RefinedWeb's funnel."""
    share, kept = {}, 1.0
    for name in stage_names:
        share[name] = kept
        if name in PAPER_KEPT_AFTER:
            kept = PAPER_KEPT_AFTER[name] / 100.0
    return share


def shuffle_group(label: str, stage_names: Sequence[str]) -> str:
    label = label[len("Refine/"):] if label.startswith("Refine/") else label  # pipeline.beam.GRAPH_LABEL
    head = label.split("/", 1)[0]
    for name in stage_names:
        if head == name or head.startswith(name + ":"):
            return name
    return head


def first_stage_of(group: str) -> str:
    """The stage whose funnel share weights a shuffle group: a fused run of dedup stages
    ("exact_dedup+url_dedup+minhash_dedup") sees the documents that reach its first stage."""
    return group.split("+", 1)[0]


def print_table(rows: List[List[str]], header: List[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", default="refinedweb")
    ap.add_argument("--warc", default="warc/news-articles-aeb.warc.gz", help="shared WARC (relative to WEBREFINERY_DATA) with the base pages")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="override a stage parameter in every run, as `refinery run --set` (e.g. extract.extractor=webrefinery)")
    ap.add_argument("--base-pages", type=int, default=32)
    ap.add_argument("--sizes", default="1,2,4,8", help="input sizes as multiples of the base pages")
    ap.add_argument("--edit-fraction", type=float, default=0.01, help="share of visible words changed in a near-duplicate")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--beam-args", default="", help="extra Beam flags for the end-to-end runs, e.g. '--direct_num_workers 2 --direct_running_mode multi_processing'")
    ap.add_argument("--dedup-sizes", default="100,800", help="document counts for the dedup stages' marginal cost")
    ap.add_argument("--dedup-edit-fraction", type=float, default=0.3, help="words changed to make distinct documents for that measurement")
    ap.add_argument("--beam-overhead", type=float, default=1.2, help="cost-model factor for Beam's per-element work beyond the stages (coders, fusion, shard writing); the measured end-to-end/stages ratio is printed beside it")
    ap.add_argument("--no-stage-timing", action="store_true", help="skip the per-stage pass (end to end only)")
    ap.add_argument("--no-shuffle", action="store_true", help="skip the shuffle-bytes measurement")
    ap.add_argument("--json", default=None, help="also write every measurement to this file")
    cm = ap.add_argument_group("cost model (one Common Crawl dump on Dataflow)")
    cm.add_argument("--pages", type=float, default=3e9)
    cm.add_argument("--warc-files", type=int, default=90_000)
    cm.add_argument("--warc-gb", type=float, default=1.0, help="compressed GB per WARC file")
    cm.add_argument("--target-hours", type=float, default=24.0, help="wall time to size the worker pool for")
    cm.add_argument("--utilization", type=float, default=0.75, help="share of paid vCPU time doing stage work (start-up, stragglers, shuffle waits)")
    cm.add_argument("--vcpu-hour-usd", type=float, default=0.056, help="Dataflow batch vCPU-hour (us-central1 list price)")
    cm.add_argument("--gb-hour-usd", type=float, default=0.003557, help="Dataflow batch memory GB-hour")
    cm.add_argument("--shuffle-gb-usd", type=float, default=0.011, help="Dataflow Shuffle, per GB processed (no volume discount applied)")
    cm.add_argument("--disk-gb-hour-usd", type=float, default=0.000054, help="standard persistent disk GB-hour")
    cm.add_argument("--disk-gb", type=float, default=25.0, help="boot disk per worker with Dataflow Shuffle")
    cm.add_argument("--price-date", default="us-central1 list prices as published 2024-2025, Shuffle without volume discounts; check cloud.google.com/dataflow/pricing")
    args = ap.parse_args(argv)

    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        raise SystemExit("--sizes must be positive integers, e.g. 1,2,4,8")
    beam_args = args.beam_args.split()
    global OVERRIDES
    OVERRIDES = tuple(args.overrides)
    warc = require_shared(*Path(args.warc).parts)
    from pipeline.config import get_pipeline
    from pipeline.stages.base import CollectionStage

    spec = get_pipeline(args.pipeline, overrides=OVERRIDES)
    stage_names = [s.name for s in spec.stages]
    document_stages = [s.name for s in spec.stages if not issubclass(s.cls, CollectionStage)]
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    results: Dict[str, Any] = {"pipeline": args.pipeline, "date": datetime.date.today().isoformat(), "sizes": []}
    try:
        pages = load_base_pages(warc, args.base_pages)
        variant_files, variant_bytes = [], []
        for k in range(sizes[-1]):
            path = work / f"variant-{k:02d}.warc.gz"
            variant_bytes.append(write_variant_warc(path, pages, k, args.edit_fraction, args.seed))
            variant_files.append(str(path))
        html_bytes = sum(len(p.html.encode("utf-8")) for p in pages)
        print(f"# bench_scaling: pipeline {args.pipeline}{''.join(' --set ' + o for o in OVERRIDES)}, {len(pages)} base pages from {warc.name} "
              f"(mean HTML {html_bytes / len(pages) / 1024:.1f} KB, {variant_bytes[0] / len(pages) / 1024:.1f} KB gzipped WARC per page), "
              f"sizes {sizes} x, near-duplicates with {args.edit_fraction:.0%} of words edited; 1 core; {results['date']}")

        for size in sizes:
            files = variant_files[:size]
            n = size * len(pages)
            wall, report = time_pipeline_run(args.pipeline, files, work / f"out-{size}", beam_args)
            row: Dict[str, Any] = {"size": size, "pages": n, "wall_s": wall, "docs_per_s": n / wall,
                                   "kept": report["output_documents"], "funnel": {s["name"]: s["in"] for s in report["stages"]}}
            if not args.no_stage_timing:
                row["stages"], reaching_dedup = time_stages_separately(args.pipeline, files)
            results["sizes"].append(row)
            print(f"  size {size:>2}x: {n:>5} pages, end to end {wall:7.1f} s = {n / wall:6.1f} pages/s, kept {report['output_documents']}", flush=True)
        if not args.no_stage_timing and reaching_dedup and any(issubclass(s.cls, CollectionStage) for s in spec.stages):
            dedup_sizes = [int(x) for x in args.dedup_sizes.split(",")]
            results["dedup"] = time_dedup_marginal(args.pipeline, reaching_dedup, dedup_sizes, args.dedup_edit_fraction, args.seed)
            print("  dedup stages alone on distinct documents: " + "; ".join(
                f"{k} " + "/".join(f"{t:.1f}" for t in v["seconds"]) + " s" for k, v in results["dedup"].items())
                + f" for {'/'.join(map(str, dedup_sizes))} docs", flush=True)
        if not args.no_shuffle:
            results["shuffle"] = measure_shuffle_bytes(args.pipeline, variant_files[:1], work / "out-shuffle")
        results["load_average_after"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # ---------------------------------------------------------------- growth
    xs = [r["pages"] for r in results["sizes"]]
    print("\n## Growth with input size (t = a + b*n fitted over the sizes; exponent 1.0 = linear)")
    rows = []
    a, b = fit_line(xs, [r["wall_s"] for r in results["sizes"]])
    rows.append(["end to end (run_pipeline)", f"{a:.2f}", f"{b * 1000:.2f}", _per_second(b),
                 f"{growth_exponent(xs, [r['wall_s'] for r in results['sizes']]):.2f}",
                 " ".join(f"{r['wall_s']:.1f}" for r in results["sizes"])])
    marginal: Dict[str, float] = {}
    if not args.no_stage_timing:
        for name in ["read", *stage_names]:
            ins = [r["stages"][name]["in"] for r in results["sizes"]]
            ts = [r["stages"][name]["seconds"] for r in results["sizes"]]
            sa, sb = fit_line(ins, ts)
            marginal[name] = max(sb, 0.0) if sb == sb else 0.0
            fitted = sb == sb
            rows.append([name, f"{sa:.2f}" if fitted else "-", f"{sb * 1000:.2f}" if fitted else "-", _per_second(sb) if fitted else "-",
                         f"{growth_exponent(ins, ts):.2f}" if ins[0] and fitted else "-",
                         " ".join(f"{t:.1f}" for t in ts) + "  (docs in: " + ",".join(str(i) for i in ins) + ")"])
    print_table(rows, ["stage", "fixed s (a)", "ms/doc (b)", "docs/s/core", "exponent", "seconds per size"])
    if "dedup" in results:
        # dedup stages see few distinct documents in the near-duplicate series: their marginal cost comes from
        # the separate measurement on distinct documents
        print("\nDedup stages alone on distinct documents (their fixed cost is Beam's start-up of a small pipeline):")
        rows = []
        for name, v in results["dedup"].items():
            marginal[name] = v["s_per_doc"]
            rows.append([name, f"{v['fixed_s']:.2f}", f"{v['s_per_doc'] * 1000:.2f}", _per_second(v["s_per_doc"]),
                         f"{growth_exponent(v['sizes'], v['seconds']):.2f}",
                         " ".join(f"{t:.1f}" for t in v["seconds"]) + "  (docs in: " + ",".join(map(str, v["sizes"])) + ")"])
        print_table(rows, ["stage", "fixed s (a)", "ms/doc (b)", "docs/s/core", "exponent", "seconds per size"])
    if not args.no_stage_timing:
        largest = results["sizes"][-1]
        stage_sum = sum(v["seconds"] for v in largest["stages"].values())
        print(f"\nAt {largest['pages']} pages: end to end {largest['wall_s']:.1f} s vs {stage_sum:.1f} s for the stages run one by one "
              f"(ratio {largest['wall_s'] / stage_sum:.2f}, Beam start-up included); load average after the runs: "
              + " ".join(f"{x:.1f}" for x in results["load_average_after"]) + f" on {os.cpu_count()} CPUs")
    results["marginal_s_per_doc"] = marginal
    results["end_to_end_fit"] = {"fixed_s": a, "s_per_page": b}

    if args.no_stage_timing:
        print("\n(cost model needs the per-stage pass: drop --no-stage-timing)")
        return results

    # ---------------------------------------------------------------- cost model
    first = results["sizes"][0]
    bench_page_bytes = variant_bytes[0] / len(pages)
    cc_page_bytes = args.warc_files * args.warc_gb * 1e9 / args.pages
    byte_scale = cc_page_bytes / bench_page_bytes
    share = paper_share_entering(stage_names)
    final_share = paper_share_entering([*stage_names, "(end)"])["(end)"]
    per_page: Dict[str, float] = {}  # core-seconds per Common Crawl page
    per_page["read"] = marginal["read"] * byte_scale
    for name in stage_names:
        cost = marginal[name] * share[name]
        per_page[name] = cost * byte_scale if name == "extract" else cost  # extraction cost follows the HTML size
    beam_overhead = args.beam_overhead
    core_hours = {k: v * args.pages / 3600.0 for k, v in per_page.items()}
    total_stage_h = sum(core_hours.values())
    total_h = total_stage_h * beam_overhead

    shuffle_gb = 0.0
    shuffle_rows = []
    if "shuffle" in results:
        by_group: Dict[str, int] = {}
        for label, v in results["shuffle"].items():
            g = shuffle_group(label, stage_names)
            by_group[g] = by_group.get(g, 0) + v["bytes"]
        for g, nbytes in sorted(by_group.items(), key=lambda kv: -kv[1]):
            per_bench_page = nbytes / len(pages)
            if g in ("SpreadDocs", "SpreadFiles", "Inputs"):
                cc = per_bench_page * byte_scale  # carries the HTML
            elif first_stage_of(g) in share:
                entering = first["funnel"].get(first_stage_of(g)) or 1
                cc = nbytes / entering * share[first_stage_of(g)]
            elif g == "WriteDocuments":
                cc = nbytes / max(first["kept"], 1) * final_share
            elif g == "WriteRejected":
                cc = nbytes / max(first["pages"] - first["kept"], 1) * (1.0 - final_share)
            else:
                cc = per_bench_page
            gb = cc * args.pages / 1e9
            shuffle_gb += gb
            shuffle_rows.append([g, f"{per_bench_page / 1024:.1f}", f"{cc / 1024:.1f}", f"{gb / 1e3:,.1f}"])
        print("\n## Shuffle (bytes written into GroupByKeys, measured at size 1x)")
        print_table(shuffle_rows, ["GroupByKeys of", "KB per bench page", "KB per CC page", "TB per dump"])

    print(f"\n## Cost model: one Common Crawl dump, {args.pages:.2g} pages in {args.warc_files:,} WARCs x {args.warc_gb:g} GB "
          f"({cc_page_bytes / 1024:.1f} KB compressed per page, {byte_scale:.2f}x the bench pages)")
    print("Per-page costs from the bench (one core of this machine), read and extraction scaled by bytes per page, every stage "
          f"weighted by the share of CC documents reaching it in RefinedWeb's funnel; Beam overhead x{beam_overhead:.2f} "
          "(--beam-overhead, an assumption).")
    rows = []
    for name in ["read", *stage_names]:
        rows.append([name, f"{share.get(name, 1.0):.0%}", f"{marginal[name] * 1000:.2f}", f"{per_page[name] * 1000:.2f}",
                     f"{core_hours[name]:,.0f}", f"{core_hours[name] / total_stage_h:.0%}"])
    rows.append(["total (x Beam overhead)", "", "", f"{sum(per_page.values()) * beam_overhead * 1000:.2f}", f"{total_h:,.0f}", ""])
    print_table(rows, ["stage", "CC docs in", "bench ms/doc", "ms per CC page", "core-hours", "share"])

    print(f"\nDataflow for a {args.target_hours:g} h wall-time target at {args.utilization:.0%} utilization; "
          f"prices: ${args.vcpu_hour_usd}/vCPU-h, ${args.gb_hour_usd}/GB-h, ${args.shuffle_gb_usd}/GB shuffled, "
          f"${args.disk_gb_hour_usd}/GB-h disk ({args.price_date}; run date {results['date']})")
    vcpu_hours = total_h / args.utilization
    rows = []
    costs = {}
    for machine, (vcpus, mem_gb) in MACHINES.items():
        workers = math.ceil(vcpu_hours / args.target_hours / vcpus)
        wall = vcpu_hours / (workers * vcpus)
        paid_vcpu_h = workers * vcpus * wall
        usd_cpu = paid_vcpu_h * args.vcpu_hour_usd
        usd_mem = workers * mem_gb * wall * args.gb_hour_usd
        usd_disk = workers * args.disk_gb * wall * args.disk_gb_hour_usd
        usd_shuffle = shuffle_gb * args.shuffle_gb_usd
        total = usd_cpu + usd_mem + usd_disk + usd_shuffle
        costs[machine] = {"workers": workers, "wall_h": wall, "usd": total, "usd_shuffle": usd_shuffle}
        rows.append([machine, f"{workers:,}", f"{wall:.1f}", f"{paid_vcpu_h:,.0f}", f"${usd_cpu:,.0f}", f"${usd_mem:,.0f}",
                     f"${usd_shuffle:,.0f}", f"${usd_disk:,.0f}", f"${total:,.0f}"])
    print_table(rows, ["machine", "workers", "wall h", "vCPU-h", "CPU $", "memory $", "shuffle $", "disk $", "total $"])
    print("\nAnchors (core-hours per dump): "
          f"this model {total_h:,.0f} (paid vCPU-h {vcpu_hours:,.0f}); FineWeb/datatrove ~{FINEWEB_CORE_HOURS:,} "
          f"(8,000 tasks x 10 h); C4 on Dataflow ~{C4_CORE_HOURS:,} (341 CPU-days, WET text, no extraction).")
    results["cost_model"] = {"core_hours_by_stage": core_hours, "core_hours_total": total_h, "beam_overhead": beam_overhead,
                             "byte_scale": byte_scale, "shuffle_gb": shuffle_gb, "dataflow": costs,
                             "assumptions": {k: v for k, v in vars(args).items() if k not in ("json",)}}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()

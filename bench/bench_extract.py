"""Benchmark of the ``extract`` + ``langid`` stages on the real shared WARCs, and of Beam's overhead.

Prints, for each extractor (trafilatura, resiliparse, webrefinery), the throughput of ``extract`` + ``langid`` in
a plain Python loop: pages/s per core (pages / CPU seconds of this single-threaded process) and MB/s
of HTML (raw HTTP payload bytes), plus wall-clock rates (lower when other processes share the CPU).
Then the resiliparse / trafilatura speed ratio (DCLM measured ~8x on WARC input), and the share of
the time spent in langid.

Beam overhead: the same stages through ``pipeline.beam.apply_document_stages`` on Beam's in-process
runner (FnApiRunner, one worker), over the same pages (``beam.Create``), timed end to end and
printed as beam_time / loop_time; the Beam counters are checked against the loop's funnel.

Article benchmark (``bench/article_benchmark.py``: the 181 pages with ground truth, split by a fixed
rule into a dev and a test half): token P/R/F1 per extractor on both halves and on all pages, and
extraction speed there (the ``extract`` stage alone, CPU time, the fastest of ``--article-rounds``
interleaved rounds): pages/s per core, MB/s of HTML, and the ratio to trafilatura.

Agreement with trafilatura on every shared WARC (``warc/*.warc.gz``, the first ``--agreement-pages``
HTML pages of each): the mean token F1 of each other extractor's text against trafilatura's, over the
pages where at least one of the two extracted something, so that no page type does much worse.

Input: HTML responses (HTTP Content-Type text/html or application/xhtml+xml, status 2xx) of the
shared WARCs, taken round-robin across files so that a ``--limit`` sample mixes them; payloads
decoded with resiliparse's encoding detection. Read with warcio here (independent of the project's
readers, so reader changes do not move these numbers).

    .venv/bin/python bench/bench_extract.py --limit 200
    .venv/bin/python bench/bench_extract.py --limit 2000 --no-beam
    .venv/bin/python bench/bench_extract.py --limit 400 --no-beam   # + article benchmark + agreement

``--webrefinery-baseline REV`` adds the row ``webrefinery@REV``: ``extract_webrefinery.py`` as committed at
git revision REV (loaded from ``git show``, run on today's depth-guarded DOM, as that revision's stage
did), timed interleaved with today's in the same rounds, and its texts compared page by page with
today's (a speed-up must not change a byte):

    .venv/bin/python bench/bench_extract.py --limit 400 --no-beam --agreement-pages -1 \
        --loop-rounds 3 --extractors trafilatura resiliparse webrefinery --webrefinery-baseline 6997618
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.document import make_document  # noqa: E402
from pipeline.paths import require_shared  # noqa: E402
from pipeline.stages.base import apply_stage  # noqa: E402
from pipeline.stages.extract import ExtractParams, ExtractStage, html_to_str  # noqa: E402
from pipeline.stages.langid import LangIdParams, LangIdStage  # noqa: E402

DEFAULT_WARCS = [
    "serp-archive-0000.warc.gz",
    "serp-archive-0001.warc.gz",
    "serp-archive-0002.warc.gz",
    "serp-archive-0003.warc.gz",
    "news-articles-aeb.warc.gz",
    "web-pages-mixed.warc.gz",
    "cc-main-2020-34-excerpt.warc.gz",
    "archive-org-2008.warc.gz",
    "clueweb-quirk.warc.gz",
    "wget-crawl-0000.warc.gz",
    "wget-crawl-0001.warc.gz",
]
HTML_TYPES = ("text/html", "application/xhtml+xml")
_STATUS = re.compile(r"(?:^|\s)([1-5]\d\d)(?:\s|$)")  # real archives write "HTTP/1.1 HTTP/1.1 200 OK"


def iter_html_pages(path: Path) -> Iterator[Tuple[dict, int]]:
    """(Document with ``html``, raw payload bytes) for each HTML response of one WARC."""
    from warcio.archiveiterator import ArchiveIterator

    with open(path, "rb") as fh:
        it = ArchiveIterator(fh)
        for rec in it:
            if rec.rec_type != "response" or rec.http_headers is None:
                continue
            ctype = (rec.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower()
            status = _STATUS.search(rec.http_headers.statusline or "")
            if ctype not in HTML_TYPES or not status or not status.group(1).startswith("2"):
                continue
            try:
                payload = rec.content_stream().read()
            except Exception:  # a cut record: not a page to time
                continue
            doc = make_document(
                id=rec.rec_headers.get_header("WARC-Record-ID"),
                url=rec.rec_headers.get_header("WARC-Target-URI"),
                source=path.name,
                warc_date=rec.rec_headers.get_header("WARC-Date"),
                record_offset=it.get_record_offset(),
                html=html_to_str(payload),
            )
            yield doc, len(payload)


def load_pages(names: List[str], limit: int) -> Tuple[List[dict], int, float]:
    """Up to ``limit`` pages taken round-robin across the WARCs (so each file contributes its first
    pages), their total payload bytes, and the CPU seconds spent reading and decoding them."""
    c0 = time.process_time()
    iters = [iter_html_pages(require_shared("warc", n)) for n in names]
    docs, nbytes = [], 0
    while iters and len(docs) < limit:
        for it in list(iters):
            try:
                doc, size = next(it)
            except StopIteration:
                iters.remove(it)
                continue
            docs.append(doc)
            nbytes += size
            if len(docs) >= limit:
                break
    return docs, nbytes, time.process_time() - c0


def make_stages(extractor: str) -> list:
    """``trafilatura-fast`` is trafilatura with ``fast: true`` (no fallback extractors)."""
    return [ExtractStage(ExtractParams(**stage_params(extractor))), LangIdStage(LangIdParams())]


def run_loop(stages, docs) -> Tuple[float, float, Dict[str, int], List[dict]]:
    """(wall s, CPU s, funnel counts, extracted docs) of the stages in a plain loop."""
    for s in stages:
        s.setup()
    funnel: Dict[str, int] = collections.Counter()
    extracted = []
    w0, c0 = time.perf_counter(), time.process_time()
    for doc in docs:
        why = None
        for s in stages:
            doc, why = apply_stage(s, doc)
            if s.name == "extract" and not why:
                extracted.append(doc)
            if why:
                break
        funnel[why or "kept"] += 1
    return time.perf_counter() - w0, time.process_time() - c0, dict(funnel), extracted


def time_langid_only(extracted: List[dict]) -> float:
    """CPU seconds of langid alone over already extracted documents."""
    stage = LangIdStage(LangIdParams())
    stage.setup()
    c0 = time.process_time()
    for doc in extracted:
        apply_stage(stage, doc)
    return time.process_time() - c0


def run_beam(stages, per_file: Dict[str, int], reshuffle: bool) -> Tuple[float, float, Dict[str, int]]:
    """(wall s, CPU s, Beam counters) of read + stages on the in-process FnApiRunner, one worker.

    The pages are read inside the pipeline (the first ``per_file[name]`` HTML pages of each WARC,
    the same pages as the loop), as the real graph does: putting megabytes of HTML into
    ``beam.Create`` would time Beam's pickling and bz2 compression of the graph instead (measured:
    most of the run). ``reshuffle`` adds the Reshuffle that the full graph has between reading and
    the stages (documents are encoded and decoded there)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipeline.beam import apply_document_stages, query_counters

    class ReadPagesDoFn(beam.DoFn):
        def process(self, item):
            name, count = item
            for i, (doc, _) in enumerate(iter_html_pages(require_shared("warc", name))):
                if i >= count:
                    return
                yield doc

    w0, c0 = time.perf_counter(), time.process_time()
    p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(["--direct_num_workers=1"]))
    pages = (
        p
        | "Files" >> beam.Create(sorted(per_file.items()), reshuffle=False)
        | "Read" >> beam.ParDo(ReadPagesDoFn())
    )
    if reshuffle:
        pages = pages | "Reshuffle" >> beam.Reshuffle()
    kept, rejected = apply_document_stages(pages, stages)
    _ = kept | "CountKept" >> beam.combiners.Count.Globally()
    _ = rejected | "CountRejected" >> beam.combiners.Count.Globally()
    result = p.run()
    result.wait_until_finish()
    counters = query_counters(result)
    return time.perf_counter() - w0, time.process_time() - c0, counters


def funnel_from_counters(counters: Dict[str, int]) -> Dict[str, int]:
    """The loop's funnel shape ({reason or 'kept': n}) rebuilt from Beam counters."""
    out: Dict[str, int] = {}
    for name, value in counters.items():
        stage, _, what = name.partition("|")
        if stage not in ("extract", "langid") or not value:
            continue
        if what.startswith("rejected|"):
            out[what[len("rejected|"):]] = out.get(what[len("rejected|"):], 0) + value
        elif stage == "langid" and what == "kept":
            out["kept"] = value
    return out


ALL_EXTRACTORS = ["trafilatura", "trafilatura-fast", "resiliparse", "webrefinery"]


def stage_params(extractor: str) -> dict:
    return {"extractor": "trafilatura", "fast": True} if extractor == "trafilatura-fast" else {"extractor": extractor}


def register_webrefinery_baseline(rev: str) -> str:
    """Register ``extract_webrefinery.py`` as committed at git revision ``rev`` as the extractor
    ``webrefinery@rev`` (the module needs nothing of the project, so its source is run as a module
    of its own) and return that name. It runs on the depth-guarded DOM of ``parse_with_depth_guard``
    without the root pre-query, as the stage did before it had one."""
    import types

    from pipeline.stages import extract as ex

    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:pipeline/stages/extract_webrefinery.py"],
                         capture_output=True, text=True, check=True).stdout
    module = types.ModuleType(f"extract_webrefinery_at_{rev}")
    exec(compile(src, f"{rev}:pipeline/stages/extract_webrefinery.py", "exec"), module.__dict__)
    name = f"webrefinery@{rev}"

    def extract(html: str, params) -> str:
        return module.extract_main_text(ex.parse_with_depth_guard(html, params))

    ex.EXTRACTORS[name] = extract
    return name


def report_identical(name: str, base: str, texts: Dict[str, str], base_texts: Dict[str, str], what: str) -> None:
    """Print whether two extractors' texts agree on every page (a speed-up must change nothing)."""
    differ = sorted(k for k in set(texts) | set(base_texts) if texts.get(k) != base_texts.get(k))
    print(f"{name} vs {base} on {what}: {len(texts)} pages, output identical: {not differ}"
          + (f" ({len(differ)} differ, e.g. {differ[:3]})" if differ else ""))


def interleaved(names: List[str], round_no: int) -> List[str]:
    """The extractors in the order of one round: reversed every other round, so that no extractor
    always runs right after the same other one (measured: the order alone moved webrefinery against
    its own baseline by ~15% on this machine)."""
    return list(names) if round_no % 2 == 0 else list(reversed(names))


def per_page_cpu(names: List[str], items: list, run_one, rounds: int) -> Dict[str, float]:
    """{name: CPU seconds}: for every item, each extractor runs ``rounds`` times, interleaved (the order
    alternating as in ``interleaved``), and its fastest run counts; the sum over items is returned. On a
    machine shared with other work a load spike then costs one page one try, not a whole round (whole-round
    minima of the same code moved by +-10% between runs on the loaded 2-core machine)."""
    total = dict.fromkeys(names, 0.0)
    clock = time.process_time
    for item in items:
        best: Dict[str, float] = {}
        for r in range(rounds):
            for name in interleaved(names, r):
                c0 = clock()
                run_one(name, item)
                cpu = clock() - c0
                if cpu < best.get(name, float("inf")):
                    best[name] = cpu
        for name in names:
            total[name] += best[name]
    return total


def print_per_page(what: str, names: List[str], total: Dict[str, float], n: int, mb: float, rounds: int) -> None:
    print(f"\n{what}: per-page minimum CPU over {rounds} interleaved tries per page")
    for name in names:
        ratio = f"  {total['trafilatura'] / total[name]:6.2f}x trafilatura" if "trafilatura" in total else ""
        print(f"  {name:16s} {n / total[name]:8.1f} pages/s/core {mb / total[name]:7.2f} MB/s{ratio}")


def article_benchmark(extractors: List[str], rounds: int, per_page_rounds: int = 0) -> None:
    """Quality on both halves and extraction speed on the article benchmark (see the docstring)."""
    from bench.article_benchmark import HALVES, extract_all, load_pages, mean_prf

    pages = load_pages()
    mb = sum(p.raw_bytes for p in pages) / 1e6
    best: Dict[str, float] = {}
    texts: Dict[str, dict] = {}
    for r in range(rounds):  # interleaved, so that a busy spell of the machine hits every extractor
        for name in interleaved(extractors, r):
            gc.collect()
            c0 = time.process_time()
            texts[name], _ = extract_all(pages, **stage_params(name))
            cpu = time.process_time() - c0
            best[name] = min(best.get(name, cpu), cpu)
    n_dev = sum(p.half == "dev" for p in pages)
    print(f"\narticle benchmark: {len(pages)} pages ({n_dev} dev / {len(pages) - n_dev} test), {mb:.1f} MB of HTML; "
          f"extract stage alone, CPU time, fastest of {rounds} interleaved rounds")
    print(f"{'extractor':16s} {'F1 all':>7s} {'P all':>6s} {'R all':>6s}  {'F1 dev':>6s} {'P dev':>6s} {'R dev':>6s}  "
          f"{'F1 test':>7s} {'P test':>6s} {'R test':>6s}  {'pages/s/core':>12s} {'MB/s':>6s} {'vs trafilatura':>14s}")
    for name in extractors:
        cols = []
        for half in (None,) + HALVES:
            p, r, f = mean_prf(texts[name], pages, half)
            cols.append(f"{f:7.3f} {p:6.3f} {r:6.3f}")
        ratio = f"{best['trafilatura'] / best[name]:13.2f}x" if "trafilatura" in best else ""
        print(f"{name:16s} " + "  ".join(cols) + f"  {len(pages) / best[name]:12.1f} {mb / best[name]:6.2f} {ratio}")
    if "webrefinery" in extractors:
        print("webrefinery fallback share: 0% (no cascade: every page is extracted by webrefinery itself)")
    for base in (e for e in extractors if e.startswith("webrefinery@")):
        if "webrefinery" in best:
            print(f"webrefinery vs {base}: {best[base] / best['webrefinery']:.2f}x less CPU "
                  f"({best['webrefinery']:.3f} s vs {best[base]:.3f} s)")
            report_identical("webrefinery", base, texts["webrefinery"], texts[base], "the article benchmark")
    if per_page_rounds > 0:
        stages = {name: ExtractStage(ExtractParams(**stage_params(name))) for name in extractors}
        for stage in stages.values():
            stage.setup()

        def run_one(name, page):
            stages[name].process({"id": page.key, "text": "", "html": page.html})

        total = per_page_cpu(extractors, pages, run_one, per_page_rounds)
        print_per_page("article benchmark, extract stage alone", extractors, total, len(pages), mb, per_page_rounds)


def agreement_with_trafilatura(extractors: List[str], per_archive: int) -> None:
    """Per shared WARC: mean token F1 of each extractor's text against trafilatura's (see the docstring)."""
    from bench.article_benchmark import token_prf

    others = [e for e in extractors if e not in ("trafilatura",)]
    stages = {name: ExtractStage(ExtractParams(**stage_params(name))) for name in ["trafilatura"] + others}
    for stage in stages.values():
        stage.setup()
    archives = sorted(p.name for p in require_shared("warc").glob("*.warc.gz"))
    limit = per_archive or None
    print(f"\nagreement with trafilatura's text, per shared WARC (first {limit or 'all'} HTML pages of each): "
          f"mean token F1 over the pages where either extracted text; 'only T' / 'only X' = pages only one of "
          f"the two extracted")
    print(f"{'archive':34s} {'pages':>5s} {'T kept':>6s}  " + "  ".join(f"{o + ' F1':>17s} {'only T':>6s} {'only X':>6s}" for o in others))
    totals = {o: [0.0, 0] for o in others}
    for name in archives:
        docs = []
        for doc, _ in iter_html_pages(require_shared("warc", name)):
            docs.append(doc)
            if limit and len(docs) >= limit:
                break
        if not docs:
            continue
        texts = {}
        for ext, stage in stages.items():
            out = []
            for doc in docs:
                d = dict(doc)
                out.append("" if stage.process(d) else d.get("text", ""))
            texts[ext] = out
        cells = []
        for o in others:
            scores, only_t, only_x = [], 0, 0
            for t, x in zip(texts["trafilatura"], texts[o]):
                if not t and not x:
                    continue
                only_t += bool(t and not x)
                only_x += bool(x and not t)
                scores.append(token_prf(x, t)[2])
            mean = sum(scores) / len(scores) if scores else float("nan")
            totals[o][0] += sum(scores)
            totals[o][1] += len(scores)
            cells.append(f"{mean:17.3f} {only_t:6d} {only_x:6d}")
        kept = sum(bool(t) for t in texts["trafilatura"])
        print(f"{name:34s} {len(docs):5d} {kept:6d}  " + "  ".join(cells))
    print(f"{'all pages':34s} {'':5s} {'':6s}  " + "  ".join(
        f"{totals[o][0] / max(1, totals[o][1]):17.3f} {'':6s} {'':6s}" for o in others))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=200, help="number of HTML pages (default 200)")
    ap.add_argument("--warcs", nargs="*", default=DEFAULT_WARCS, help="WARC names under the shared warc/ folder")
    ap.add_argument("--extractors", nargs="*", default=["trafilatura", "resiliparse", "webrefinery"],
                    choices=ALL_EXTRACTORS)
    ap.add_argument("--loop-rounds", type=int, default=1,
                    help="interleaved rounds of the WARC loop (the fastest of each extractor counts; default 1)")
    ap.add_argument("--webrefinery-baseline", metavar="REV",
                    help="also run extract_webrefinery.py as committed at git revision REV (row webrefinery@REV)")
    ap.add_argument("--no-beam", action="store_true", help="skip the Beam overhead measurement")
    ap.add_argument("--article-rounds", type=int, default=3,
                    help="rounds over the article benchmark (fastest counts; 0 = skip it)")
    ap.add_argument("--per-page-rounds", type=int, default=0,
                    help="also time every page N times per extractor, interleaved, fastest try counts (0 = off)")
    ap.add_argument("--agreement-pages", type=int, default=100,
                    help="HTML pages per shared WARC for the agreement with trafilatura (0 = all; -1 = skip it)")
    args = ap.parse_args(argv)
    if args.webrefinery_baseline:
        args.extractors.append(register_webrefinery_baseline(args.webrefinery_baseline))

    docs, nbytes, read_cpu = load_pages(args.warcs, args.limit)
    mb = nbytes / 1e6
    sources = collections.Counter(d["source"] for d in docs)
    print(f"pages: {len(docs)} HTML responses, {mb:.1f} MB of HTML, from {len(sources)} WARCs "
          f"(read+decoded in {read_cpu:.2f} s CPU): {dict(sources)}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs visible; one core used\n")

    loop, loop_texts, runs = {}, {}, {}
    for r in range(args.loop_rounds):  # interleaved; the fastest round of each extractor counts
        for name in interleaved(args.extractors, r):
            gc.collect()  # no extractor pays for the garbage of the one before it
            run = run_loop(make_stages(name), docs)
            if name not in runs or run[1] < runs[name][1]:
                runs[name] = run
    for name in args.extractors:
        wall, cpu, funnel, extracted = runs[name]
        loop_texts[name] = {d["id"]: d["text"] for d in extracted}
        lang_cpu = time_langid_only(extracted)
        loop[name] = (wall, cpu, funnel)
        print(f"[loop] {name:12s} extract+langid: {len(docs) / cpu:7.1f} pages/s/core  {mb / cpu:6.2f} MB/s/core "
              f"(CPU {cpu:.2f} s; wall {wall:.2f} s = {len(docs) / wall:.1f} pages/s)  langid share {lang_cpu / cpu:.0%}")
        print(f"       funnel: {dict(sorted(funnel.items()))}")
    if "trafilatura" in loop and "resiliparse" in loop:
        ratio = loop["trafilatura"][1] / loop["resiliparse"][1]
        print(f"\nspeed ratio resiliparse / trafilatura (CPU time, extract+langid): {ratio:.1f}x")
    if "trafilatura" in loop and "webrefinery" in loop:
        ratio = loop["trafilatura"][1] / loop["webrefinery"][1]
        print(f"speed ratio webrefinery / trafilatura (CPU time, extract+langid): {ratio:.1f}x")
    for base in (e for e in args.extractors if e.startswith("webrefinery@")):
        if "trafilatura" in loop:
            print(f"speed ratio {base} / trafilatura (CPU time, extract+langid): "
                  f"{loop['trafilatura'][1] / loop[base][1]:.1f}x")
        if "webrefinery" in loop:
            print(f"webrefinery vs {base} (CPU time, extract+langid): {loop[base][1] / loop['webrefinery'][1]:.2f}x less")
            report_identical("webrefinery", base, loop_texts["webrefinery"], loop_texts[base], "the WARC pages")
    if "trafilatura" in loop and "trafilatura-fast" in loop:
        ratio = loop["trafilatura"][1] / loop["trafilatura-fast"][1]
        print(f"speed ratio trafilatura fast=true / default (CPU time, extract+langid): {ratio:.2f}x")
    if args.per_page_rounds > 0:
        stage_sets = {name: make_stages(name) for name in args.extractors}
        for stages in stage_sets.values():
            for s in stages:
                s.setup()

        def run_one(name, doc):
            doc = dict(doc)
            for s in stage_sets[name]:
                doc, why = apply_stage(s, doc)
                if why:
                    break

        total = per_page_cpu(args.extractors, docs, run_one, args.per_page_rounds)
        print_per_page(f"[loop] {len(docs)} WARC pages, extract+langid", args.extractors, total, len(docs), mb,
                       args.per_page_rounds)
    if args.article_rounds > 0:
        article_benchmark(args.extractors, args.article_rounds, args.per_page_rounds)
    if args.agreement_pages >= 0 and "trafilatura" in args.extractors:
        agreement_with_trafilatura(args.extractors, args.agreement_pages)

    if args.no_beam:
        return 0
    print("\nBeam overhead: read + extract + langid on FnApiRunner (1 worker) vs the same in the loop "
          "(CPU time; the loop's reading CPU added). 'fixed' = a run over one page (start-up).")
    for name in args.extractors:
        loop_wall, loop_cpu, funnel = loop[name]
        loop_total = loop_cpu + read_cpu
        for reshuffle in (False, True):
            _, fixed_cpu, _ = run_beam(make_stages(name), {docs[0]["source"]: 1}, reshuffle)
            beam_wall, beam_cpu, counters = run_beam(make_stages(name), sources, reshuffle)
            beam_funnel = funnel_from_counters(counters)
            same = beam_funnel == {k: v for k, v in funnel.items() if v}
            label = "read|Reshuffle|stages" if reshuffle else "read|stages (fused)"
            print(f"[beam] {name:12s} {label:22s} CPU {beam_cpu:6.2f} s vs loop {loop_total:6.2f} s: "
                  f"beam_time/loop_time = {beam_cpu / loop_total:.2f}; fixed start-up {fixed_cpu:.2f} s, "
                  f"without it {(beam_cpu - fixed_cpu) / loop_total:.2f}; wall {beam_wall:.1f} s; "
                  f"funnel identical to loop: {same}")
            if not same:
                print(f"       beam funnel {beam_funnel} vs loop {funnel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

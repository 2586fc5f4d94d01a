"""End-to-end dedup benchmark on a synthetic corpus of near-duplicates built from real text.

Corpus (``--docs N``): "original" pages are random samples of 8-30 real sentences from the shared
Common Crawl extract (so two originals share almost no 5-gram); a fraction (``--dup-fraction``)
are copies of an earlier page (original or copy: chains happen) with 0-2.5% of words substituted
(Jaccard ~0.8-1), some with only case/punctuation changed (exact-dedup material), some re-crawled
under the same URL. The truth (which pages descend from which original) is known. The corpus is
built in a child process and written as JSON lines (``--corpus-dir`` keeps it for later runs), so
neither its building nor an in-memory ``Create`` counts in the pipeline's time and memory.

Pipeline (Beam, in-process FnApiRunner; ``--workers N`` for multi_processing): ReadFromText ->
json.loads -> exact_dedup -> url_dedup -> minhash_dedup (``--preset``) [-> substring_dedup with
``--substring``].

Prints wall time of the pipeline run, peak memory (the driver's high-water mark VmHWM, which is
the whole run with one worker; and the sum over the driver and its worker processes sampled every
0.2 s), connected-components rounds needed, per-stage counts, and quality against the truth: clusters
left with exactly one page (perfect), with several (missed duplicates), with none (over-merged:
pages of different originals merged, an LSH false positive chain).

    .venv/bin/python bench/bench_dedup.py --docs 10000 [--preset refinedweb] [--workers 2] [--substring]
        [--corpus-dir /tmp/dedup-corpus] [--trace rss.csv]
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import random
import re
import resource
import sys
import tempfile
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # noqa: E402

from pipeline.dedup.local import dedup_metrics  # noqa: E402
from pipeline.dedup.stages import (  # noqa: E402
    ExactDedupParams, ExactDedupStage, MinhashDedupParams, MinhashDedupStage, SubstringDedupParams,
    SubstringDedupStage, UrlDedupParams, UrlDedupStage,
)
from pipeline.document import make_document  # noqa: E402

DATA = os.environ.get("WEBREFINERY_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def real_sentences():
    path = os.path.join(DATA, "cc", "cc-main-2019-30-extracted.jsonl.gz")
    if not os.path.exists(path):
        raise SystemExit(f"missing {path}: set WEBREFINERY_DATA to the shared data folder")
    pool = set()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            for s in _SENT.split(json.loads(line)["text"]):
                if 6 <= len(s.split()) <= 60:
                    pool.add(s.strip())
    return sorted(pool)


def build_corpus(n: int, dup_fraction: float, seed: int):
    """(docs, truth: doc id -> original index)."""
    rng = random.Random(seed)
    pool = real_sentences()
    letters = "bcdfghjklmnpqrstvwxz"
    docs, truth = [], {}
    for i in range(n):
        if i == 0 or rng.random() >= dup_fraction:
            text = " ".join(rng.sample(pool, rng.randint(8, 30)))
            origin, url = i, f"http://site{i % 997}.example/page/{i}"
        else:
            parent = docs[rng.randrange(len(docs))]
            origin = truth[parent["id"]]
            kind = rng.random()
            words = parent["text"].split(" ")
            if kind < 0.15:  # same text, other case and punctuation: exact dedup material
                text = " ".join(words).upper().replace(".", " !")
            else:
                rate = rng.uniform(0.0, 0.025)
                for _ in range(max(1, round(rate * len(words)))):
                    words[rng.randrange(len(words))] = "".join(rng.choice(letters) for _ in range(rng.randint(3, 9)))
                text = " ".join(words)
            url = parent["url"] if kind > 0.9 else f"http://mirror{i % 101}.example/copy/{i}"
        doc = make_document(id=f"syn-{i}", text=text, url=url, source="synthetic", record_offset=i,
                            warc_date=f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00Z")
        docs.append(doc)
        truth[doc["id"]] = origin
    return docs, truth


def write_corpus(path: str, n: int, dup_fraction: float, seed: int) -> None:
    """Build the corpus and write it as JSON lines to ``path`` (+ ``path.truth.npy``: origin per doc index)."""
    docs, truth = build_corpus(n, dup_fraction, seed)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps(doc) + "\n")
    origins = np.array([truth[d["id"]] for d in docs], dtype=np.int64)
    np.save(path + ".truth.npy", origins)
    with open(path + ".meta.json", "w") as fh:
        json.dump({"docs": n, "dup_fraction": dup_fraction, "seed": seed,
                   "words": sum(len(d["text"].split()) for d in docs)}, fh)
    os.replace(path + ".tmp", path)


def corpus_file(folder: str, n: int, dup_fraction: float, seed: int):
    """(path of the corpus JSONL, words/doc, origins array), building it in a child process when missing.

    The child keeps the corpus-building memory (all texts at once) out of this process's peak RSS."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"corpus-{n}-{dup_fraction}-{seed}.jsonl")
    meta = path + ".meta.json"
    if not (os.path.exists(path) and os.path.exists(meta)):
        child = multiprocessing.get_context("fork").Process(target=write_corpus, args=(path, n, dup_fraction, seed))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"building the corpus failed (exit code {child.exitcode})")
    with open(meta) as fh:
        info = json.load(fh)
    return path, info["words"] / n, np.load(path + ".truth.npy")


def _descendants(pid: int):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    kids = [int(x) for x in fh.read().split()]
                out += kids
                todo += kids
        except OSError:
            continue
    return out


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


class RssSampler(threading.Thread):
    """Samples the RSS of this process and all its descendants (Beam workers) every ``period`` seconds."""

    def __init__(self, period: float = 0.2):
        super().__init__(daemon=True)
        self.period, self.stop, self.peak_total, self.peak_worker = period, threading.Event(), 0.0, 0.0
        self.trace = []  # (seconds since start, total MiB)

    def run(self):
        me, t0 = os.getpid(), time.perf_counter()
        while not self.stop.is_set():
            workers = [_rss_mib(p) for p in _descendants(me)]
            total = _rss_mib(me) + sum(workers)
            self.peak_total = max(self.peak_total, total)
            self.peak_worker = max([self.peak_worker] + workers)
            self.trace.append((time.perf_counter() - t0, total))
            self.stop.wait(self.period)


class Dedup(beam.PTransform):
    def __init__(self, stages):
        super().__init__()
        self.stages = stages

    def expand(self, docs):
        rejected = []
        for stage in self.stages:
            docs, rej = docs | stage.name >> stage.beam_transform()
            rejected.append(rej)
        return docs, tuple(rejected) | "AllRejected" >> beam.Flatten()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--preset", default="refinedweb", choices=["refinedweb", "dclm", "fineweb"])
    ap.add_argument("--dup-fraction", type=float, default=0.4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-rounds", type=int, default=20)
    ap.add_argument("--substring", action="store_true", help="add substring_dedup (one shuffle element per token)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus-dir", default=None,
                    help="keep the generated corpus here and reuse it on later runs (default: a temporary folder)")
    ap.add_argument("--trace", default=None, help="write the sampled (seconds, total RSS MiB) trace to this CSV")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        start = time.perf_counter()
        path, words, origins = corpus_file(args.corpus_dir or os.path.join(tmp, "corpus"), args.docs, args.dup_fraction, args.seed)
        print(f"corpus: {args.docs} docs, {words:.0f} words/doc, {len(np.unique(origins))} originals, "
              f"ready in {time.perf_counter() - start:.1f}s ({os.path.getsize(path) / 2**20:.0f} MiB of JSON lines)")

        stages = [ExactDedupStage(ExactDedupParams()), UrlDedupStage(UrlDedupParams()),
                  MinhashDedupStage(MinhashDedupParams(preset=args.preset, max_rounds=args.max_rounds))]
        if args.substring:
            stages.append(SubstringDedupStage(SubstringDedupParams()))
        beam_args = []
        if args.workers > 1:
            beam_args = [f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_processing"]

        p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(beam_args))
        docs = p | "Read" >> beam.io.ReadFromText(path) | "Parse" >> beam.Map(json.loads)
        kept, rejected = docs | Dedup(stages)
        out = os.path.join(tmp, "out")
        kept | "KeptIds" >> beam.Map(lambda d: d["id"]) | "WriteKept" >> beam.io.WriteToText(os.path.join(out, "kept"))
        rejected | "Reasons" >> beam.Map(lambda dr: json.dumps([dr[0]["id"], dr[1]])) | "WriteRejected" >> beam.io.WriteToText(os.path.join(out, "rejected"))
        base_rss = _rss_mib(os.getpid())
        sampler = RssSampler()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        child_cpu_before = sum(os.times()[2:4])
        sampler.start()
        start = time.perf_counter()
        result = p.run()
        result.wait_until_finish()
        wall = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - cpu_before + sum(os.times()[2:4]) - child_cpu_before
        metrics = dedup_metrics(result)
        kept_ids, reasons = [], Counter()
        for name in os.listdir(out):
            with open(os.path.join(out, name)) as fh:
                for line in fh:
                    if name.startswith("kept"):
                        kept_ids.append(line.strip())
                    else:
                        reasons[json.loads(line)[1]] += 1
    if args.trace:
        with open(args.trace, "w") as fh:
            fh.writelines(f"{t:.2f},{m:.0f}\n" for t, m in sampler.trace)

    self_hwm = usage.ru_maxrss / 1024
    kept_per_cluster = Counter(int(origins[int(doc_id[len("syn-"):])]) for doc_id in kept_ids)
    clusters = set(origins.tolist())
    perfect = sum(1 for c in clusters if kept_per_cluster[c] == 1)
    missed = sum(kept_per_cluster[c] - 1 for c in clusters if kept_per_cluster[c] > 1)
    lost = sum(1 for c in clusters if kept_per_cluster[c] == 0)

    print(f"preset {args.preset}, workers {args.workers}, stages: {', '.join(s.name for s in stages)}")
    print(f"wall {wall:.1f}s  ({args.docs / wall:.0f} docs/s), CPU {cpu:.1f}s")
    print(f"peak RSS: all processes {sampler.peak_total:.0f} MiB (sampled every 0.2 s; {base_rss:.0f} MiB before the run), "
          f"driver high-water mark {self_hwm:.0f} MiB, largest worker process {sampler.peak_worker:.0f} MiB")
    print(f"connected components: rounds needed {metrics.get('minhash_dedup|cc_rounds_needed', 0)}, "
          f"unconverged nodes {metrics.get('minhash_dedup|cc_unconverged_nodes', 0)}, nodes in clusters {metrics.get('minhash_dedup|cc_nodes', 0)}")
    largest = metrics.get("minhash_dedup|largest_bucket")
    print(f"candidate buckets {metrics.get('minhash_dedup|candidate_buckets', 0)}, star edges "
          f"{metrics.get('minhash_dedup|star_edges', 0)}, largest bucket {largest['max'] if largest else 0}")
    if args.substring:
        print(f"substring_dedup: documents cut {metrics.get('substring_dedup|cut_documents', 0)}, "
              f"tokens removed {metrics.get('substring_dedup|removed_tokens', 0)}")
    print(f"kept {len(kept_ids)}; rejected: " + ", ".join(f"{r} {c}" for r, c in sorted(reasons.items())))
    print(f"truth: {len(clusters)} originals; kept exactly one: {perfect}; extra copies kept (missed): {missed}; "
          f"clusters with nothing kept (over-merged): {lost}")


if __name__ == "__main__":
    main()

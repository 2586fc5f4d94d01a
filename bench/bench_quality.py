"""Benchmark of the quality layer's stages: docs/s per core, their share of extraction, decontamination memory,
and PII redaction against a straightforward regex loop.

For ``pii``, ``decontaminate`` (drop and cut mode, all six default eval sets) and ``quality_classifier``
(a fastText bigram model of the default size, 100 dims and 200,000 buckets, trained here by
``refinery train-classifier``'s code) it prints documents/s per core (CPU time of this single process) on
the 697 real Common Crawl documents of ``cc/cc-main-2019-30-extracted.jsonl.gz``, and the three stages'
CPU per document next to trafilatura's extraction CPU per page on the shared article pages (the goal: all
three together < 10% of extraction; per document, which over-states their share of a run, since fewer
documents reach them than pages are extracted).

Decontamination memory: the index's bytes (sorted uint64 hashes + uint16 task masks) and the peak RSS of
a fresh process that builds it, next to one that only imports numpy and the module.

PII: ``pii.redact`` against a plain loop that applies the same patterns one kind after another with
``re.sub`` (no pre-checks, validation in the callback): speed ratio, and the number of documents whose
redacted text differs (should be 0). datatrove's ``PIIFormatter`` is not compared (not installed here).

    WEBREFINERY_DATA=../shared/data .venv/bin/python bench/bench_quality.py --repeat 3 --extract-pages 40
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("WEBREFINERY_DATA", REPO.parent / "shared" / "data")).resolve()

from pipeline.quality import classifier as clf  # noqa: E402
from pipeline.quality import decontam as dc  # noqa: E402
from pipeline.quality import pii  # noqa: E402
from pipeline.quality.stages import (  # noqa: E402
    DecontaminateParams, DecontaminateStage, PiiParams, PiiStage, QualityClassifierParams, QualityClassifierStage,
)
from pipeline.stages.base import apply_stage  # noqa: E402

from bench_filters import cpu_time  # noqa: E402  (best CPU time of repeated runs; bench/ is on the path)


def load_docs():
    with gzip.open(DATA / "cc" / "cc-main-2019-30-extracted.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [{"id": str(i), "text": json.loads(line).get("text") or ""} for i, line in enumerate(fh)]


def bench_stage(name, stage, docs, repeat):
    stage.setup()
    t = cpu_time(lambda: [apply_stage(stage, d) for d in docs], repeat)
    print(f"{name:<28} {len(docs) / t:>10.0f} docs/s/core {t / len(docs) * 1e3:>9.3f} ms/doc")
    return t / len(docs)


def bench_extraction(pages: int, repeat: int) -> float:
    import trafilatura

    files = sorted((DATA / "html" / "article-extraction-benchmark").glob("*.html.gz"))[:pages]
    htmls = [gzip.open(f, "rt", encoding="utf-8", errors="replace").read() for f in files]
    t = cpu_time(lambda: [trafilatura.extract(h, favor_precision=True, deduplicate=False) for h in htmls], repeat)
    return t / len(htmls)


def naive_redact(text: str) -> str:
    """The same patterns, one kind after another, with re.sub and the validation in the callback."""
    def ip_sub(m):
        return "<IP>" if pii._public_ip(m.group()) else m.group()

    def ip6_sub(m):
        s = m.group()
        return "<IP>" if sum(1 for g in s.split(":") if g) >= 3 and pii._public_ip(s) else s

    def intl_sub(m):
        return "<PHONE>" if 8 <= sum(c.isdigit() for c in m.group()) <= 15 else m.group()

    text = pii._EMAIL.sub("<EMAIL>", text)
    text = pii._IPV4.sub(ip_sub, text)
    text = pii._IPV6.sub(ip6_sub, text)
    text = pii._PHONE_NA.sub("<PHONE>", text)
    return pii._PHONE_INTL.sub(intl_sub, text)


def bench_pii(docs, repeat):
    texts = [d["text"] for d in docs]
    t_ours = cpu_time(lambda: [pii.redact(t) for t in texts], repeat)
    t_base = cpu_time(lambda: [naive_redact(t) for t in texts], repeat)
    differ = sum(pii.redact(t)[0] != naive_redact(t) for t in texts)
    n = len(texts)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"pii.redact                   {n / t_ours:>10.0f} docs/s/core ({mb / t_ours:.1f} MB/s); regex loop "
          f"{n / t_base:.0f} docs/s/core ({mb / t_base:.1f} MB/s); ratio {t_base / t_ours:.2f}x; "
          f"documents redacted differently: {differ}")


MEMORY_PROBE = """
import sys, numpy
sys.path.insert(0, {repo!r})
from pipeline.quality import decontam as dc

def hwm():  # peak RSS of this process in KiB (VmHWM; ru_maxrss would include the parent's before exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])

base = hwm()
if {build}:
    index = dc.build_index(dc.DEFAULT_TASKS, 13, {eval!r})
    print(index.nbytes, len(index.hashes))
print(base, hwm())
"""


def bench_decontam_memory():
    out = {}
    for build in (False, True):
        code = MEMORY_PROBE.format(repo=str(REPO), build=build, eval=str(DATA / "eval"))
        t = time.time()
        lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
        out[build] = (lines, time.time() - t)
    nbytes, ngrams = map(int, out[True][0][0].split())
    peak_build = int(out[True][0][1].split()[1])
    peak_base = int(out[False][0][0].split()[1])
    print(f"decontamination index (6 sets, 13-grams): {ngrams:,} n-grams, {nbytes / 1e6:.1f} MB of arrays; peak RSS "
          f"building it {peak_build / 1024:.0f} MB vs {peak_base / 1024:.0f} MB for the bare import "
          f"(+{(peak_build - peak_base) / 1024:.0f} MB), built in {out[True][1]:.1f}s wall; workers memory-map the cached "
          f".npy files instead")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--extract-pages", type=int, default=40)
    ap.add_argument("--model", default=None, help="a fastText model to score with (default: train one here)")
    args = ap.parse_args(argv)
    docs = load_docs()
    print(f"{len(docs)} real CC documents, {sum(len(d['text']) for d in docs) / len(docs):,.0f} characters on average; "
          f"CPU time of one process (the machine may be loaded: ratios come from the same run)")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from pipeline.quality.train_cli import read_corpus

            pos = read_corpus(str(DATA / "html" / "article-extraction-benchmark" / "ground-truth.json"))
            ex = [("__label__hq", t) for t in pos] + [("__label__cc", d["text"]) for d in docs if d["text"]]
            t = time.time()
            m = clf.train(ex, clf.TrainParams())
            model = os.path.join(tmp, "model.bin")
            clf.save_model(m, model)
            print(f"trained the default-size model (dim 100, bucket 200,000, {len(m.dictionary.words):,} words) on "
                  f"{len(ex):,} documents in {time.time() - t:.1f}s; {os.path.getsize(model) / 1e6:.0f} MB")
        cache = os.path.join(tmp, "decontam")
        per_doc = {}
        per_doc["pii"] = bench_stage("pii (email, ip, phone)", PiiStage(PiiParams()), docs, args.repeat)
        bench_stage("pii (+ card)", PiiStage(PiiParams(kinds=pii.KINDS)), docs, args.repeat)
        dc.load_index(dc.DEFAULT_TASKS, 13, str(DATA / "eval"), cache)  # build once, outside the timing
        bench_stage("decontaminate (drop)", DecontaminateStage(DecontaminateParams(cache_dir=cache)), docs, args.repeat)
        per_doc["decontaminate"] = bench_stage(  # refinedweb_plus's mode
            "decontaminate (cut)", DecontaminateStage(DecontaminateParams(mode="cut", cache_dir=cache)), docs, args.repeat)
        per_doc["quality_classifier"] = bench_stage(
            "quality_classifier", QualityClassifierStage(QualityClassifierParams(model_path=model, threshold=0.5)),
            docs, args.repeat)
    total = sum(per_doc.values())
    if args.extract_pages:
        ext = bench_extraction(args.extract_pages, args.repeat)
        print(f"trafilatura.extract on {args.extract_pages} shared article pages: {ext * 1e3:.1f} ms/page; the three quality "
              f"stages together {total * 1e3:.2f} ms/doc = {100 * total / ext:.1f}% of extraction "
              f"({', '.join(f'{k} {100 * v / ext:.1f}%' for k, v in per_doc.items())})")
    bench_pii(docs, args.repeat)
    bench_decontam_memory()
    return 0


if __name__ == "__main__":
    sys.exit(main())

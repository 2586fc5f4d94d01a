"""Benchmark of the tokenizer commands against plain ``tokenizers`` calls in the same process.

Prints three comparisons (ratios against a baseline measured in the same run):

1. Training throughput (MB/s): ``train_tokenizer`` (Beam sampling pass + spill + BPE training + report)
   vs ``Tokenizer.train_from_iterator`` on the same texts already in memory. Goal: overhead <= 10%.
   With ``sample_bytes`` above the corpus size and no held-out text, both train on exactly the same
   documents, so the two tokenizer.json files must be identical (checked).
2. Tokenization throughput (tokens/s, and per core): the Beam ``tokenize`` pipeline (read shards,
   encode, group, sort, write Arrow token shards + manifest) vs ``Tokenizer.encode_batch`` in a plain
   loop over in-memory texts (ids -> numpy, ``<|endoftext|>`` appended).
3. Peak memory (max RSS, fresh subprocess) of ``train_tokenizer`` on ``--rss-mb`` MB of text, beside
   the RSS of plain ``train_from_iterator`` holding the same text in a Python list.

Input: real shared text (CC extracts, CCNet heads, WikiText, LAMBADA, HellaSwag, ARC, PIQA, botchan,
tinyshakespeare, the enwiki excerpt) cut into documents; sizes beyond the ~20 MB of real text are
reached by repeating it with seeded variation (line order shuffled, ~3% of words altered), so the
repeats add new distinct words as fresh text would. Say so when quoting the numbers.

    .venv/bin/python bench/bench_tokenize.py --train-mb 20 --tokenize-mb 20 --rss-mb 100 --threads 1

``--threads`` sets RAYON_NUM_THREADS (the Rust thread pool of ``tokenizers``) for every measurement.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WEBREFINERY_DATA", REPO.parent / "shared" / "data")).resolve()


def _shared(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        raise SystemExit(f"shared data file {path} is missing (set WEBREFINERY_DATA)")
    return path


def _chunks(text: str, lines: int):
    rows = text.split("\n")
    for i in range(0, len(rows), lines):
        chunk = "\n".join(rows[i:i + lines]).strip()
        if chunk:
            yield chunk


def real_documents():
    """Real shared texts as (source, text) documents, ~20 MB in all."""
    for name in ("cc-main-2019-30-extracted.jsonl.gz", "ccnet-head-en-0091.jsonl.gz", "ccnet-head-en-0174.jsonl.gz"):
        with gzip.open(_shared("cc", name), "rt", encoding="utf-8") as fh:
            for line in fh:
                yield name, json.loads(line)["text"]
    ev = _shared("eval")
    for line in (ev / "lambada_openai_test.jsonl").read_text(encoding="utf-8").splitlines():
        yield "lambada", json.loads(line)["text"]
    hs = [json.loads(l) for l in (ev / "hellaswag_validation.jsonl").read_text(encoding="utf-8").splitlines()]
    for i in range(0, len(hs), 20):  # 20 items per document
        yield "hellaswag", "\n".join(h["ctx"] + " " + " ".join(h["endings"]) for h in hs[i:i + 20])
    for name in ("arc_easy_validation.jsonl", "arc_challenge_validation.jsonl"):
        rows = [json.loads(l) for l in (ev / name).read_text(encoding="utf-8").splitlines()]
        for i in range(0, len(rows), 20):
            yield name, "\n".join(r["question"] + " " + " ".join(r["choices"]["text"]) for r in rows[i:i + 20])
    piqa = [json.loads(l) for l in (ev / "piqa_valid.jsonl").read_text(encoding="utf-8").splitlines()]
    for i in range(0, len(piqa), 20):
        yield "piqa", "\n".join(f"{p['goal']} {p['sol1']} {p['sol2']}" for p in piqa[i:i + 20])
    yield from (("wikitext", c) for c in _chunks((ev / "wikitext-2-raw-test.txt").read_text(encoding="utf-8"), 40))
    for name in ("botchan.txt", "tinyshakespeare.txt"):
        yield from ((name, c) for c in _chunks(_shared("text", name).read_text(encoding="utf-8"), 60))
    with bz2.open(_shared("text", "enwiki-excerpt-206-pages.xml.bz2"), "rt", encoding="utf-8") as fh:
        for page in re.findall(r"<text[^>]*>(.*?)</text>", fh.read(), flags=re.S):
            if page.strip():
                yield "enwiki", page


def _vary(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    rng.shuffle(lines)
    words = " \n".join(lines).split(" ")
    for i in range(len(words)):
        w = words[i]
        if len(w) > 3 and rng.random() < 0.03:
            j = rng.randrange(len(w) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def corpus_documents(megabytes: float):
    """Documents totalling about ``megabytes`` MB of UTF-8 text: real text, then seeded variations of it."""
    base = list(real_documents())
    budget, used, rep = int(megabytes * 1e6), 0, 0
    while used < budget:
        rng = random.Random(rep)
        for i, (src, text) in enumerate(base):
            if rep:
                text = _vary(text, rng)
            yield {"id": f"{src}:{rep}:{i}", "text": text, "source": src, "record_offset": i}
            used += len(text.encode("utf-8"))
            if used >= budget:
                return
        rep += 1


def write_corpus(folder: Path, megabytes: float, files: int = 4) -> tuple:
    """Write the corpus as zstd Arrow document shards; return (number of docs, bytes)."""
    from pipeline.tokenize.documents import write_document_shards

    docs = list(corpus_documents(megabytes))
    write_document_shards(docs, str(folder), num_files=files, batch_rows=256)
    return len(docs), sum(len(d["text"].encode("utf-8")) for d in docs)


def read_texts(folder: Path) -> list:
    from pipeline.tokenize.documents import resolve_document_files
    from pipeline.tokenize.encode import iter_pairs

    return [t for _, t in iter_pairs(resolve_document_files(str(folder)))]


class Timer:
    """Wall and CPU seconds (CPU of every thread of this process: fair when cores are shared)."""

    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0


def _best(timers):
    return min(t.wall for t in timers), min(t.cpu for t in timers)


def bench_training(folder: Path, n_bytes: int, vocab: int, work: Path, repeat: int) -> None:
    from pipeline.tokenize.train import TrainTokenizerParams, train_bpe_from_texts, train_tokenizer

    params = TrainTokenizerParams(vocab_size=vocab, sample_bytes=10**12, max_doc_bytes=10**12, heldout_bytes=0)
    texts = read_texts(folder)
    direct_t, ours_t = [], []
    for _ in range(repeat):  # alternate, keep the best of each: shared cores make single runs noisy
        with Timer() as t:  # baseline: tokenizers directly on the texts in memory, same trainer settings
            direct = train_bpe_from_texts(iter(texts), len(texts), params)
        direct_t.append(t)
        with Timer() as t:
            report = train_tokenizer(str(folder), str(work / "tok"), params)
        ours_t.append(t)
    identical = (work / "tok" / "tokenizer.json").read_text(encoding="utf-8") == direct.to_str(pretty=True)
    (dw, dc), (ow, oc) = _best(direct_t), _best(ours_t)
    mb = n_bytes / 1e6
    print(f"[train] {mb:.1f} MB, vocab {vocab}, best of {repeat}: direct tokenizers {dw:.2f}s wall "
          f"({mb / dw:.2f} MB/s), {dc:.2f}s CPU  |  train-tokenizer {ow:.2f}s wall ({mb / ow:.2f} MB/s; last run: "
          f"sample {report['seconds']['sample']:.2f}s, train {report['seconds']['train']:.2f}s), {oc:.2f}s CPU  |  "
          f"overhead wall {100 * (ow / dw - 1):+.1f}%  CPU {100 * (oc / dc - 1):+.1f}%  "
          f"identical tokenizer.json: {identical}")


def bench_tokenize(folder: Path, tokenizer_path: Path, threads: int, work: Path, repeat: int) -> None:
    import numpy as np
    from tokenizers import Tokenizer

    from pipeline.tokenize.encode import TokenizeParams, count_documents, run_tokenize_pipeline

    params = TokenizeParams(tokenizer=str(tokenizer_path), output=str(work / "tokens"))
    texts = read_texts(folder)
    tok = Tokenizer.from_file(str(tokenizer_path))
    eot = tok.token_to_id("<|endoftext|>")
    plain_t, beam_t = [], []
    for _ in range(repeat):
        with Timer() as t:
            plain_tokens = 0
            for i in range(0, len(texts), params.batch_size):
                for enc in tok.encode_batch(texts[i:i + params.batch_size], add_special_tokens=False):
                    ids = enc.ids
                    ids.append(eot)
                    plain_tokens += len(np.array(ids, dtype=np.uint16))
        plain_t.append(t)
        with Timer() as t:
            manifest = run_tokenize_pipeline(str(folder), params)
        beam_t.append(t)
    _, beam_tokens = count_documents(manifest)
    assert beam_tokens == plain_tokens, (beam_tokens, plain_tokens)
    (pw, pc), (bw, bc) = _best(plain_t), _best(beam_t)
    n = beam_tokens
    print(f"[tokenize] {n} tokens, {threads} tokenizers thread(s), best of {repeat}: plain encode_batch loop "
          f"{n / pw:,.0f} tok/s wall ({n / pw / threads:,.0f}/core), {n / pc:,.0f} tok per CPU-s  |  Beam tokenize "
          f"(read, encode, group, sort, write shards) {n / bw:,.0f} tok/s wall ({n / bw / threads:,.0f}/core), "
          f"{n / bc:,.0f} tok per CPU-s  |  beam/plain throughput wall {pw / bw:.3f}  CPU {pc / bc:.3f}")


RSS_CHILD = r"""
import json, resource, sys, time
mode, folder, out, vocab = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
from pipeline.tokenize.train import TrainTokenizerParams, train_bpe_from_texts, train_tokenizer
params = TrainTokenizerParams(vocab_size=vocab, sample_bytes=10**12, max_doc_bytes=10**12, heldout_bytes=0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if mode == "ours":
    train_tokenizer(folder, out, params)
else:
    from pipeline.tokenize.documents import resolve_document_files
    from pipeline.tokenize.encode import iter_pairs
    texts = [t for _, t in iter_pairs(resolve_document_files(folder))]
    train_bpe_from_texts(iter(texts), len(texts), params)
print(json.dumps({"base_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - t0}))
"""


def bench_rss(folder: Path, n_bytes: int, vocab: int, work: Path) -> None:
    results = {}
    for mode in ("ours", "direct"):
        done = subprocess.run([sys.executable, "-c", RSS_CHILD, mode, str(folder), str(work / f"rss-{mode}"), str(vocab)],
                              capture_output=True, text=True, cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)))
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    o, d = results["ours"], results["direct"]
    print(f"[memory] training on {n_bytes / 1e6:.1f} MB, vocab {vocab}: train-tokenizer peak RSS "
          f"{o['peak_kb'] / 1024:.0f} MiB (after imports {o['base_kb'] / 1024:.0f} MiB; {o['seconds']:.1f}s)  "
          f"direct tokenizers with the text in a list {d['peak_kb'] / 1024:.0f} MiB ({d['seconds']:.1f}s)  "
          f"ratio {o['peak_kb'] / d['peak_kb']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-mb", type=float, default=20.0,
                        help="text for the training-throughput comparison (0: skip it and the tokenization one)")
    parser.add_argument("--tokenize-mb", type=float, default=20.0,
                        help="text for the tokenization comparison, with the tokenizer trained above (0: skip)")
    parser.add_argument("--rss-mb", type=float, default=100.0, help="text for the peak-memory measurement (0: skip)")
    parser.add_argument("--vocab-size", type=int, default=32_768)
    parser.add_argument("--threads", type=int, default=1, help="RAYON_NUM_THREADS for tokenizers")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs per comparison (best kept)")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp folder, removed)")
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # before tokenizers starts its pool
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        print(f"cpus {os.cpu_count()}  load average {os.getloadavg()[0]:.2f}  tokenizers threads {args.threads}")
        if args.train_mb > 0:
            n_docs, n_bytes = write_corpus(work / "train_docs", args.train_mb)
            print(f"training corpus: {n_docs} documents, {n_bytes / 1e6:.1f} MB")
            bench_training(work / "train_docs", n_bytes, args.vocab_size, work, args.repeat)
        if args.train_mb > 0 and args.tokenize_mb > 0:  # needs the tokenizer trained above
            tok_docs = work / "train_docs"
            if args.tokenize_mb != args.train_mb:
                tok_docs = work / "tokenize_docs"
                write_corpus(tok_docs, args.tokenize_mb)
            bench_tokenize(tok_docs, work / "tok" / "tokenizer.json", args.threads, work, args.repeat)
        if args.rss_mb > 0:
            n_docs, n_bytes = write_corpus(work / "rss_docs", args.rss_mb)
            bench_rss(work / "rss_docs", n_bytes, args.vocab_size, work)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

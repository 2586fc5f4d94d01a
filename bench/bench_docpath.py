"""Where ``rw_filtered``'s per-document time goes outside extraction, before and after a change, in one command.

The document path of ``refinery run rw_filtered --set extract.extractor=resiliparse`` on the 4 shared archives
of ``bench/bench_datatrove.py`` (894 HTML responses), piece by piece, in one process and without Beam: the
reader (``iter_records``), each stage as the fused DoFn applies it (``apply_stage``), the shard writer
(``write_shard`` of the kept documents into the pipeline's shards and of the rejected ones), plus a language-ID
breakdown (time per page against text length, ``k=1`` against ``k=-1`` over the 176 labels, the Python wrapper
against fastText's own call). Each piece is timed as CPU time of this process (``time.process_time``: other load
on the machine matters less), best of ``--rounds``.

With ``--base COMMIT`` (default ``HEAD``; ``--base none`` to skip) the same measurement runs in a child
process on a ``git worktree`` of that commit (its ``pipeline`` package ahead of the editable install) and the
table shows both columns and the ratio base / this tree. Both must produce the same documents, decisions and
shard bytes: a digest of every shard written and of every (document, reason) is compared and printed. Then
the whole ``refinery run`` (Beam, in-process) for each tree, and for this tree with the fused DoFn's stage
batches of 1 document (document-major, as before batching), pinned to one core (``--core``), medians of
``--rounds`` of wall and CPU time (``os.wait4``), and whether the shards are byte-identical (``--no-runs``
skips it).

    .venv/bin/python bench/bench_docpath.py --base 42e3522 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("BENCH_DOCPATH_ROOT", REPO))  # the tree whose `pipeline` is measured
sys.path.insert(0, str(ROOT))
ARCHIVES = ("news-articles-aeb", "web-pages-mixed", "cc-main-2020-34-excerpt", "serp-archive-0000")
NON_EXTRACTION = ("read", "url_filter", "langid", "gopher_repetition", "gopher_quality", "line_corrections",
                  "normalize", "write shards")


def _inputs():
    data = Path(os.environ.get("WEBREFINERY_DATA", REPO.parent / "shared" / "data"))
    paths = [data / "warc" / f"{a}.warc.gz" for a in ARCHIVES]
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"shared archive {p} is missing (set WEBREFINERY_DATA)")
    return paths


def run_batched(stages, records, batch: int):
    """The same stages applied stage-major over batches of ``batch`` documents (each stage's code and data
    stay in cache across the batch): (CPU seconds per stage, kept (key, text), rejected (key, reason))."""
    from pipeline.document import doc_key
    from pipeline.stages.base import apply_stage

    times = dict.fromkeys([s.name for s in stages], 0.0)
    pages = [doc for doc, why in records if why is None]
    kept, rejected = [], []
    for i in range(0, len(pages), batch):
        alive = pages[i:i + batch]
        for stage in stages:
            t = time.process_time()
            nxt = []
            for doc in alive:
                doc, why = apply_stage(stage, doc)
                (rejected.append((doc_key(doc), why)) if why else nxt.append(doc))
            times[stage.name] += time.process_time() - t
            alive = nxt
        kept += [(doc_key(d), d.get("text")) for d in alive]
    order = {k: j for j, k in enumerate(doc_key(d) for d in pages)}
    kept.sort(key=lambda kv: order[kv[0]])
    rejected.sort(key=lambda kv: order[kv[0]])
    return times, kept, rejected


def measure(rounds: int, batch: int = 64) -> dict:
    """CPU seconds per piece (best of ``rounds``), counts, the language-ID breakdown and an output digest."""
    from pipeline.beam import schemas_for
    from pipeline.config import get_pipeline
    from pipeline.io import shards as shard_io
    from pipeline.io.readers import iter_records
    from pipeline.document import doc_key
    from pipeline.stages.base import apply_stage

    spec = get_pipeline("rw_filtered", overrides=["extract.extractor=resiliparse"])
    stages = spec.build_stages()
    for s in stages:
        s.setup()
    schema, rejected_schema = schemas_for(stages)
    paths = [str(p) for p in _inputs()]
    best: dict = {}
    digest = None
    for _ in range(rounds):
        times = dict.fromkeys(["read"] + [s.name for s in stages] + ["write shards"], 0.0)
        t0 = time.process_time()
        records = [rec for p in paths for rec in iter_records(p, params=spec.read)]
        times["read"] = time.process_time() - t0
        times["read: gzip inflate alone"] = _inflate_only(paths)
        kept, rejected, lid_texts = [], [], []
        for doc, why in records:
            if why is not None:
                rejected.append(dict(doc, reason="read:" + why))
                continue
            for stage in stages:
                if stage.name == "langid":
                    lid_texts.append(doc.get("text") or "")
                t = time.process_time()
                doc, why = apply_stage(stage, doc)
                times[stage.name] += time.process_time() - t
                if why:
                    break
            doc.pop("html", None)
            (rejected.append(dict(doc, reason=why)) if why else kept.append(doc))
        t0 = time.process_time()
        h = hashlib.sha256()
        with tempfile.TemporaryDirectory(prefix="docpath-shards-") as out:
            for rows, sch, n, sub in ((kept, schema, spec.output.num_shards, "documents"),
                                      (rejected, rejected_schema, spec.output.rejected_shards, "rejected")):
                groups: dict = {}
                for d in rows:
                    groups.setdefault(shard_io.shard_of(doc_key(d), n), []).append(d)
                for i in range(n):
                    e = shard_io.write_shard(groups.get(i, []), os.path.join(out, sub), i, n, sch)
                    h.update(f"{sub}/{e['name']}:{e['sha256']}\n".encode())
        times["write shards"] = time.process_time() - t0
        batched = run_batched(stages, records, batch)
        if batched[1:] != ([(doc_key(d), d.get("text")) for d in kept],
                           [(doc_key(d), d["reason"]) for d in rejected if not d["reason"].startswith("read:")]):
            raise SystemExit("stage-major batches decided differently from document-major order")
        for name, v in batched[0].items():
            times[f"batched {name}"] = v
        for d in kept + rejected:
            h.update(f"{doc_key(d)}\x1f{d.get('reason')}\x1f{d.get('text')}\n".encode("utf-8", "surrogatepass"))
        if digest is not None and digest != h.hexdigest():
            raise SystemExit("the document path is not deterministic across rounds")
        digest = h.hexdigest()
        for k, v in times.items():
            best[k] = min(best.get(k, v), v)
    from pipeline.io import gzip_members

    return {"cpu": best, "records": len(records), "kept": len(kept), "rejected": len(rejected),
            "inflater": getattr(gzip_members, "INFLATER", "zlib"),
            "digest": digest, "langid": langid_breakdown(stages, lid_texts, rounds)}


def _inflate_only(paths) -> float:
    """CPU seconds of the reader's gzip member events alone (inflate, no record splitting or parsing)."""
    from pipeline.io.dialects import WARC
    from pipeline.io.gzip_members import GzipMembers, RawWindow

    t0 = time.process_time()
    for p in paths:
        with open(p, "rb") as fh:
            for _ in GzipMembers(RawWindow(fh), WARC.starts_record).events():
                pass
    return time.process_time() - t0


def langid_breakdown(stages, texts, rounds: int) -> dict:
    """ms/page of the stage's prediction, k=-1 instead of k=1, fastText's own call; a linear fit in text length."""
    import numpy as np

    lid = next(s for s in stages if s.name == "langid")
    model = lid._model
    lines = [t.replace("\r", " ").replace("\n", " ") for t in texts if t.strip()]

    def best(fn):
        out = []
        for _ in range(rounds):
            t = time.process_time()
            fn()
            out.append(time.process_time() - t)
        return min(out) * 1e3 / max(len(lines), 1)

    from pipeline.stages import langid as lid_mod

    per_page = []
    for line in lines:
        t = time.perf_counter()
        model.f.predict(line + "\n", 1, 0.0, "strict")
        per_page.append(time.perf_counter() - t)
    lengths = np.array([len(x) for x in lines], dtype=float)
    slope, intercept = np.polyfit(lengths, np.array(per_page), 1) if len(lines) > 1 else (0.0, 0.0)
    return {
        "pages": len(lines), "mean_chars": float(lengths.mean()) if len(lines) else 0.0,
        "stage_predict_ms": best(lambda: [lid_mod.predict_language(model, t) for t in lines]),
        "k1_ms": best(lambda: [model.predict(t, k=1) for t in lines]),
        "k_all_ms": best(lambda: [model.predict(t, k=-1) for t in lines]),
        "fasttext_call_ms": best(lambda: [model.f.predict(t + "\n", 1, 0.0, "strict") for t in lines]),
        "ns_per_char": slope * 1e9, "us_per_page_fixed": intercept * 1e6,
        "corr": float(np.corrcoef(lengths, per_page)[0, 1]) if len(lines) > 1 else 0.0,
    }


# The CLI run as `python -m pipeline.cli` makes it (the same imports in the same order, main() as the whole program),
# with pipeline.beam's STAGE_BATCH_DOCS set the moment the CLI imports it.
_WITH_BATCH = """import importlib.abc, importlib.util, sys
class SetBatch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "pipeline.beam":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.STAGE_BATCH_DOCS = {batch}
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, SetBatch())
sys.argv = {argv!r}
from pipeline.cli import main
sys.exit(main())
"""


def whole_runs(trees: dict, rounds: int, core: int) -> dict:
    """Median wall and CPU (os.wait4, pinned to ``core``) of ``refinery run rw_filtered`` (resiliparse) per
    (tree, stage batch size or None for the tree's own), rounds interleaved; and whether all wrote the same
    shard bytes."""
    from bench.bench_datatrove import median, run_pinned

    inputs = [str(p) for p in _inputs()]
    out: dict = {name: [] for name in trees}
    hashes: dict = {}
    with tempfile.TemporaryDirectory(prefix="docpath-runs-") as tmp:
        for rnd in range(rounds):
            for name, (tree, batch) in trees.items():
                d = Path(tmp) / f"{name.replace(' ', '_')}-{rnd}"
                env = dict(os.environ, PYTHONPATH=str(tree))
                args = ["run", "rw_filtered", "--input", *inputs, "--output", str(d),
                        "--set", "extract.extractor=resiliparse", "--force"]
                cmd = [sys.executable, "-m", "pipeline.cli", *args] if batch is None else [
                    sys.executable, "-c", _WITH_BATCH.format(batch=int(batch), argv=["refinery", *args])]
                r = run_pinned(cmd, core, env, Path(tmp) / "log.txt", cwd=tree)
                out[name].append(r)
                h = hashlib.sha256()
                for f in sorted(d.glob("*/*.arrow")):
                    h.update(f.relative_to(d).as_posix().encode() + b":" + hashlib.sha256(f.read_bytes()).digest())
                hashes.setdefault(name, set()).add(h.hexdigest())
    return {name: {"wall": median([r["wall"] for r in rs]), "cpu": median([r["cpu"] for r in rs])}
            for name, rs in out.items()}, len(set().union(*hashes.values())) == 1


def _measure_tree(tree: Path, rounds: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), BENCH_DOCPATH_ROOT=str(tree))
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--rounds", str(rounds)],
                         env=env, cwd=str(tree), capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"measuring {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base", default="HEAD", help="commit to compare with ('none': this tree only)")
    ap.add_argument("--core", type=int, default=0, help="the CPU the whole runs are pinned to")
    ap.add_argument("--no-runs", action="store_true", help="skip the whole refinery runs (pieces only)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("WEBREFINERY_DATA", str(REPO.parent / "shared" / "data"))
    if args.child:
        print(json.dumps(measure(args.rounds)))
        return 0
    results, runs, same = {}, None, True
    worktree = None
    try:
        if args.base != "none":
            worktree = Path(tempfile.mkdtemp(prefix="bench-docpath-base-"))
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.base], cwd=REPO, check=True,
                           capture_output=True)
            results[f"base {args.base}"] = _measure_tree(worktree, args.rounds)
        results["this tree"] = _measure_tree(REPO, args.rounds)
        names = list(results)
        if not args.no_runs:
            trees = {n: (worktree if n.startswith("base") else REPO, None) for n in names}
            # the same invocation (pipeline.beam imported first, to set the batch size) for both batch sizes
            trees = {"batches of 1 (document-major)": (REPO, 1), "batches of 64": (REPO, 64), **trees}
            runs, same = whole_runs(trees, args.rounds, args.core)
    finally:
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, capture_output=True)
            shutil.rmtree(worktree, ignore_errors=True)
    first = results[names[0]]
    if runs:
        print(f"\n## the whole run: refinery run rw_filtered --set extract.extractor=resiliparse, pinned to core "
              f"{args.core}, medians of {args.rounds}\n")
        cols = list(runs)
        pairs = [(cols[0], cols[1])] + ([(cols[2], cols[3])] if len(cols) > 3 else [])
        print("| | " + " | ".join(cols) + " | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |")
        print("|---|" + "---|" * (len(cols) + len(pairs)))
        for key in ("wall", "cpu"):
            ratios = [f"{runs[a][key] / runs[b][key]:.2f}x" for a, b in pairs]
            print(f"| {key} s | " + " | ".join(f"{runs[c][key]:.2f}" for c in cols) + " | " + " | ".join(ratios) + " |")
        print(f"\nshards of the whole runs: {'byte-identical' if same else 'DIFFERENT'} across {', '.join(cols)}")
    print(f"\n## rw_filtered document path (resiliparse), {first['records']} records, {first['kept']} kept: "
          f"CPU ms per record, best of {args.rounds}\n")
    print("| piece | " + " | ".join(names) + (" | base / this |" if len(names) > 1 else " |"))
    print("|---|" + "---|" * len(names) + ("---|" if len(names) > 1 else ""))
    pieces = list(dict.fromkeys(k for n in names for k in results[n]["cpu"] if not k.startswith("batched ")))
    totals = {n: 0.0 for n in names}
    for piece in pieces:
        cells = []
        for n in names:
            v = results[n]["cpu"].get(piece, 0.0) * 1e3 / results[n]["records"]
            cells.append(f"{v:.3f}")
            if piece in NON_EXTRACTION:
                totals[n] += v
        ratio = ""
        if len(names) > 1:
            a, b = (results[n]["cpu"].get(piece, 0.0) for n in names)
            ratio = f" {a / b:.2f}x |" if b > 0 else " - |"
        print(f"| {piece} | " + " | ".join(cells) + " |" + ratio)
    ratio = f" {totals[names[0]] / totals[names[-1]]:.2f}x |" if len(names) > 1 else ""
    print("| **all but extract** | " + " | ".join(f"**{totals[n]:.3f}**" for n in names) + " |" + ratio)
    print("\n'read: gzip inflate alone' is part of 'read' (not added again); gzip inflater: "
          + ", ".join(f"{n}: {results[n].get('inflater', 'zlib')}" for n in names))
    this = results[names[-1]]["cpu"]
    stage_names = [k[len("batched "):] for k in this if k.startswith("batched ")]
    print(f"\n## {names[-1]}: document-major (as the fused DoFn) vs stage-major over batches of 64 documents, "
          "CPU ms per record\n")
    print("| stage | document-major | stage-major batches | ratio |\n|---|---|---|---|")
    for name in stage_names + ["stages, all but extract", "stages, all"]:
        if name.startswith("stages, "):
            pick = [n for n in stage_names if name.endswith("all") or n != "extract"]
            a, b = sum(this[n] for n in pick), sum(this["batched " + n] for n in pick)
        else:
            a, b = this[name], this["batched " + name]
        n_rec = results[names[-1]]["records"]
        print(f"| {name} | {a * 1e3 / n_rec:.3f} | {b * 1e3 / n_rec:.3f} | {a / b:.2f}x |" if b > 0 else f"| {name} | - | - | - |")
    print("\n## language ID (the texts langid sees), ms per page\n")
    print("| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for key, what in (("stage_predict_ms", "the stage's predict_language (k=1)"), ("k1_ms", "model.predict, k=1"),
                      ("k_all_ms", "model.predict, k=-1 (176 labels, as datatrove)"),
                      ("fasttext_call_ms", "fastText's own call (no wrapper)"),
                      ("ns_per_char", "fit: ns per character"), ("us_per_page_fixed", "fit: us per page, fixed"),
                      ("corr", "correlation time ~ length")):
        print(f"| {what} | " + " | ".join(f"{results[n]['langid'][key]:.3f}" for n in names) + " |")
    lid = results[names[-1]]["langid"]
    print(f"\n{lid['pages']} pages, {lid['mean_chars']:.0f} characters on average")
    digests = {results[n]["digest"] for n in names}
    print(f"\noutputs (every shard's bytes, every document's key, reason and text): "
          f"{'identical' if len(digests) == 1 else 'DIFFERENT'} across {', '.join(names)}")
    return 0 if len(digests) == 1 and same else 1


if __name__ == "__main__":
    sys.exit(main())

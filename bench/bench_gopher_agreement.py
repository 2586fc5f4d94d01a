"""Agreement of our Gopher filters (both conventions) with datatrove 0.10's, page by page and rule by rule.

datatrove is installed in a virtual environment of its own (``--venv``, default ``/tmp/dt-venv``;
created with ``python -m venv`` and ``pip install 'datatrove==0.10.*' 'spacy>=3.7,<4' regex`` when it
is missing: datatrove's English word tokenizer is spaCy's). Nothing of datatrove is imported here: its
filters run in a child process of that environment and report their decisions as JSON.

Texts (``--corpus main``): the shared archives news-articles-aeb, web-pages-mixed,
cc-main-2020-34-excerpt and serp-archive-0000 extracted with our ``extract`` stage (trafilatura), plus
the texts of ``cc/cc-main-2019-30-extracted.jsonl.gz``; ``--corpus held-out``: serp-archive-0001..3,
wget-crawl-0000/1, archive-org-2008 and the two CCNet head extracts; English pages only (our ``langid``, en >= 0.65), as in a
pipeline where the Gopher rules follow language ID. Both sides see exactly the same texts, with the
paper's thresholds (our defaults; datatrove's defaults are the same values).

Printed: the page decision (kept by both Gopher filters or not) datatrove vs ours for each
convention, each rule's confusion table (each rule decided on its own, not only the first that
fails), and the (datatrove reason, our reason) pairs of the pages decided differently.

    .venv/bin/python bench/bench_gopher_agreement.py --tokens      # builds the venv and the texts
    .venv/bin/python bench/bench_gopher_agreement.py --corpus held-out --tokens
    .venv/bin/python bench/bench_gopher_agreement.py --texts T.jsonl   # texts kept by --keep-texts
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATATROVE = "datatrove==0.10.*"
SPACY = "spacy>=3.7,<4"
EXTRA = ("regex",)  # needed by datatrove's text utilities, not among its base requirements
# --corpus main: the archives the issue measured on; held-out: other shared archives, never used while
# writing pipeline/stages/en_words.py (a check that its rules are not fitted to the main corpus).
CORPORA = {
    "main": (("news-articles-aeb", "web-pages-mixed", "cc-main-2020-34-excerpt", "serp-archive-0000"),
             ("cc-main-2019-30-extracted.jsonl.gz",)),
    "held-out": (("serp-archive-0001", "serp-archive-0002", "serp-archive-0003", "wget-crawl-0000", "wget-crawl-0001",
                  "archive-org-2008"), ("ccnet-head-en-0091.jsonl.gz", "ccnet-head-en-0174.jsonl.gz")),
}

# our rule name -> (datatrove filter, datatrove keyword enabling only that rule, our parameter)
QUALITY_RULES = {
    "min_words": ("min_doc_words", "min_words"),
    "max_words": ("max_doc_words", "max_words"),
    "min_mean_word_length": ("min_avg_word_length", "min_mean_word_length"),
    "max_mean_word_length": ("max_avg_word_length", "max_mean_word_length"),
    "symbol_word_ratio": ("max_symbol_word_ratio", "max_symbol_word_ratio"),
    "bullet_lines": ("max_bullet_lines_ratio", "max_bullet_lines_frac"),
    "ellipsis_lines": ("max_ellipsis_lines_ratio", "max_ellipsis_lines_frac"),
    "alpha_words": ("max_non_alpha_words_ratio", "min_alpha_words_frac"),
    "stop_words": ("min_stop_words", "min_stop_words"),
}
REPETITION_FRACS = ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac")

# Runs inside the datatrove venv: reads {"rules": {...}, "texts": path}, writes one JSON line per text.
CHILD = r'''
import json, sys, warnings
warnings.filterwarnings("ignore")
from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
cfg = json.load(open(sys.argv[1]))
Q_OFF = {k: None for k in cfg["quality_keys"]}
R_OFF = dict({k: None for k in cfg["repetition_fracs"]}, top_n_grams=(), dup_n_grams=())
single = {}
for rule, (key, value) in cfg["quality"].items():
    single["gopher_quality:" + rule] = GopherQualityFilter(**dict(Q_OFF, **{key: value}))
for rule, spec in cfg["repetition"].items():
    kw = dict(R_OFF)
    if spec[0] == "top":
        kw["top_n_grams"] = ((spec[1], spec[2]),)
    elif spec[0] == "dup":
        kw["dup_n_grams"] = ((spec[1], spec[2]),)
    else:
        kw[spec[0]] = spec[1]
    single["gopher_repetition:" + rule] = GopherRepetitionFilter(**kw)
full = [("gopher_repetition", GopherRepetitionFilter()), ("gopher_quality", GopherQualityFilter())]
tokens = cfg.get("tokens")
if tokens:
    from datatrove.utils.text import split_into_words

def decide(f, doc):
    try:
        out = f.filter(doc)
    except Exception as exc:
        return "error:" + type(exc).__name__
    return None if out is True else (out[1] if isinstance(out, tuple) else "rejected")

with open(cfg["out"], "w") as fh:
    for line in open(cfg["texts"]):
        d = json.loads(line)
        doc = Document(text=d["text"], id=d["id"])
        rec = {"id": d["id"], "rules": {k: decide(f, doc) is not None for k, f in single.items()}}
        reason = None
        for stage, f in full:
            why = decide(f, doc)
            if why:
                reason = stage + ":" + why
                break
        rec["reason"] = reason
        if tokens:
            rec["tokens"] = split_into_words(d["text"])
        fh.write(json.dumps(rec) + "\n")
'''


def ensure_venv(venv: Path) -> Path:
    """The venv's python with datatrove importable (created / installed when missing)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(python), "-c", "import datatrove.pipeline.filters, spacy"], capture_output=True)
    if probe.returncode != 0:
        print(f"installing {DATATROVE}, {SPACY} and {', '.join(EXTRA)} into {venv} ...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", DATATROVE, SPACY, *EXTRA], check=True)
    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('datatrove'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if not version.startswith("0.10."):
        raise SystemExit(f"{venv} has datatrove {version}; this benchmark compares with 0.10.x")
    print(f"datatrove {version} in {venv}")
    return python


def build_texts(out: Path, work: Path, corpus: str) -> None:
    """English texts of the shared archives and CC extracts -> JSONL {id, text} (our extract + langid)."""
    from pipeline.cli import main as refinery
    from pipeline.io.shards import iter_rows
    from pipeline.paths import require_shared

    config = work / "texts.yaml"
    config.write_text(
        "pipelines:\n  texts:\n    stages:\n      - extract\n      - langid: {languages: [en], threshold: 0.65}\n"
        "    output: {num_shards: 1, rejected_shards: 1, write_rejected: false}\n",
        encoding="utf-8",
    )
    archives, cc_files = CORPORA[corpus]
    inputs = [str(require_shared("warc", f"{a}.warc.gz")) for a in archives]
    inputs += [str(require_shared("cc", name)) for name in cc_files]
    run_dir = work / "run"
    if refinery(["run", "texts", "--config", str(config), "--input", *inputs, "--output", str(run_dir), "--no-funnel"]):
        raise SystemExit("refinery run failed")
    n = 0
    with open(out, "w", encoding="utf-8") as fh:
        for row in iter_rows(str(run_dir / "documents"), columns=["id", "text"]):
            fh.write(json.dumps({"id": row["id"], "text": row["text"]}) + "\n")
            n += 1
    print(f"{n} English texts -> {out}")


def our_decisions(texts: list, convention: str) -> list:
    """Per text: ({"stage:rule": rejected?}, first reason or None) for one convention."""
    from pipeline.stages.gopher_quality import GopherQuality
    from pipeline.stages.gopher_repetition import GopherRepetition

    stages = [GopherRepetition(GopherRepetition.Params(convention=convention)),
              GopherQuality(GopherQuality.Params(convention=convention))]
    for s in stages:
        s.setup()
    out = []
    for text in texts:
        rules, reason = {}, None
        for stage in stages:
            signals = stage.measure(text)
            for rule in stage.rules:
                rules[f"{stage.name}:{rule.name}"] = rule.breaks(signals[rule.column], getattr(stage.params, rule.param_name))
            if reason is None:
                why = stage.process({"text": text})
                reason = f"{stage.name}:{why}" if why else None
        out.append((rules, reason))
    return out


def child_config(texts_path: Path, out: Path, tokens: bool) -> dict:
    from pipeline.stages.gopher_quality import GopherQuality
    from pipeline.stages.gopher_repetition import DUP_NS, TOP_NS, GopherRepetition

    q, r = GopherQuality.Params(), GopherRepetition.Params()
    repetition = {name: [name, getattr(r, name)] for name in REPETITION_FRACS}
    repetition.update({f"top_{n}gram": ["top", n, getattr(r, f"top_{n}gram_frac")] for n in TOP_NS})
    repetition.update({f"dup_{n}gram": ["dup", n, getattr(r, f"dup_{n}gram_frac")] for n in DUP_NS})
    return {
        "texts": str(texts_path), "out": str(out), "tokens": tokens,
        "quality_keys": [k for k, _ in QUALITY_RULES.values()],
        "quality": {rule: [key, getattr(q, ours)] for rule, (key, ours) in QUALITY_RULES.items()},
        "repetition_fracs": list(REPETITION_FRACS),
        "repetition": repetition,
    }


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "-"


def report(dt: list, ours: dict, n: int) -> None:
    print(f"\n## Page decision (kept by gopher_repetition and gopher_quality), {n} English pages\n")
    print("| convention | agree | both keep | both reject | datatrove rejects, we keep | we reject, datatrove keeps |")
    print("|---|---|---|---|---|---|")
    for conv, dec in ours.items():
        c = collections.Counter((d["reason"] is not None, o[1] is not None) for d, o in zip(dt, dec))
        agree = c[(False, False)] + c[(True, True)]
        print(f"| {conv} | {agree}/{n} ({_pct(agree, n)}) | {c[(False, False)]} | {c[(True, True)]} | "
              f"{c[(True, False)]} | {c[(False, True)]} |")
    rules = list(dt[0]["rules"]) if dt else []
    print("\n## Each rule on its own: pages it rejects (datatrove / ours / both) and disagreements\n")
    print("| rule | datatrove rejects | " + " | ".join(f"{c}: rejects, disagree" for c in ours) + " |")
    print("|---|---|" + "---|" * len(ours))
    for rule in rules:
        dt_rej = sum(d["rules"][rule] for d in dt)
        cells = []
        for dec in ours.values():
            mine = sum(o[0][rule] for o in dec)
            dis = sum(d["rules"][rule] != o[0][rule] for d, o in zip(dt, dec))
            cells.append(f"{mine}, {dis}")
        print(f"| {rule} | {dt_rej} | " + " | ".join(cells) + " |")
    for conv, dec in ours.items():
        pairs = collections.Counter((d["reason"] or "kept", o[1] or "kept") for d, o in zip(dt, dec)
                                    if (d["reason"] is None) != (o[1] is None))
        print(f"\n## {conv}: pages decided differently, by (datatrove reason, our reason)\n")
        print("| datatrove | ours | pages |\n|---|---|---|")
        for (a, b), k in pairs.most_common():
            print(f"| {a} | {b} | {k} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default="/tmp/dt-venv", type=Path, help="datatrove's virtual environment (made if missing)")
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="main",
                    help="main: the archives of issue #17; held-out: other shared archives and the CCNet heads")
    ap.add_argument("--texts", type=Path, help="JSONL {id, text} to use instead of extracting the shared archives")
    ap.add_argument("--keep-texts", type=Path, help="write the extracted texts here (reuse with --texts)")
    ap.add_argument("--tokens", action="store_true", help="also compare our datatrove word tokens with spaCy's")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    python = ensure_venv(args.venv)
    with tempfile.TemporaryDirectory(prefix="gopher-agreement-") as tmp:
        work = Path(tmp)
        texts_path = args.texts
        if texts_path is None:
            texts_path = args.keep_texts or work / "texts.jsonl"
            build_texts(texts_path, work, args.corpus)
        records = [json.loads(line) for line in open(texts_path, encoding="utf-8")]
        texts = [r["text"] for r in records]
        cfg_path, dt_out = work / "child.json", work / "datatrove.jsonl"
        cfg_path.write_text(json.dumps(child_config(texts_path, dt_out, args.tokens)))
        t0 = time.perf_counter()
        subprocess.run([str(python), "-c", CHILD, str(cfg_path)], check=True)
        t_dt = time.perf_counter() - t0
        dt = [json.loads(line) for line in open(dt_out, encoding="utf-8")]
        assert [d["id"] for d in dt] == [r["id"] for r in records]
        ours, times = {}, {}
        for conv in ("paper", "datatrove"):
            t0 = time.perf_counter()
            ours[conv] = our_decisions(texts, conv)
            times[conv] = time.perf_counter() - t0
        print(f"\ndatatrove (22 single-rule filters + the 2 full filters per page, tokens cached): {t_dt:.1f}s; "
              f"ours (signals once per stage): paper {times['paper']:.1f}s, datatrove {times['datatrove']:.1f}s")
        report(dt, ours, len(texts))
        if args.tokens:
            from pipeline.stages.en_words import en_words

            same = sum(en_words(t) == d["tokens"] for t, d in zip(texts, dt))
            n_tok = sum(len(d["tokens"]) for d in dt)
            print(f"\nword tokens: identical to datatrove's (spaCy) on {same}/{len(texts)} pages ({n_tok:,} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

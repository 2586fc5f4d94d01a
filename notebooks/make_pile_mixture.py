"""A tiny Pile-like mixture from the shared data, end to end: web pages refined by ``refinedweb_fast``, the
Wikipedia excerpt and the Gutenberg novel (curated text: refined by ``rw_raw``, whose extraction passes text
through), one tokenizer trained on all three, one token set per source, ``refinery mix`` with the Pile's
way of weighting (here shares of a token budget: web 60%, Wikipedia 30%, books 10%; ``--epochs`` weights by
epochs instead), and a tiny model trained on the mixture. Notebook 04 shows the
mixture table and the per-source validation curves of the run this writes.

    WEBREFINERY_DATA=../shared/data .venv/bin/python notebooks/make_pile_mixture.py --out runs/pile

Each step is one ``refinery`` command (printed before it runs), so the same chain works on your own data.
"""

from __future__ import annotations

import argparse
import bz2
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wiki_documents(path: Path):
    """Articles of a MediaWiki XML dump (redirects and other namespaces left out), markup roughly stripped."""
    with bz2.open(path) as fh:
        for _, el in ET.iterparse(fh):
            if el.tag.rsplit("}", 1)[-1] != "page":
                continue
            title, ns = el.find("{*}title").text, el.find("{*}ns").text
            text = el.find(".//{*}text").text or ""
            el.clear()
            if ns != "0" or text.lstrip().upper().startswith("#REDIRECT"):
                continue
            for _ in range(3):  # nested templates
                text = re.sub(r"\{\{[^{}]*\}\}", "", text)
            text = re.sub(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>|<!--.*?-->", "", text, flags=re.S)
            text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
            text = re.sub(r"'{2,}|<[^>]+>|\{\|.*?\|\}", "", text, flags=re.S)
            text = re.sub(r"\n{3,}", "\n\n", text).strip()
            if len(text) > 500:
                yield {"id": f"enwiki/{title}", "text": f"{title}\n\n{text}"}


def book_documents(path: Path, lines: int = 80):
    """A Project Gutenberg book (licence header and footer left out) in documents of ``lines`` lines."""
    text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    start, end = text.find("*** START OF"), text.find("*** END OF")
    body = [line for line in text[text.find("\n", start) + 1:end if end > 0 else None].split("\n") if line.strip()]
    for i in range(0, len(body), lines):
        yield {"id": f"{path.stem}/{i // lines:04d}", "text": "\n".join(body[i:i + lines])}


def refinery(*args) -> None:
    cmd = [sys.executable, "-m", "pipeline.cli", *map(str, args)]
    print("$ refinery " + " ".join(map(str, args)), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/pile", help="folder for everything this makes")
    ap.add_argument("--data", default=None, help="shared data folder (default: WEBREFINERY_DATA or ../shared/data)")
    ap.add_argument("--warc", nargs="+", default=["news-articles-aeb.warc.gz", "web-pages-mixed.warc.gz"],
                    help="WARCs of the web source (in DATA/warc)")
    ap.add_argument("--shares", nargs=3, default=["web=0.6", "wiki=0.3", "books=0.1"], metavar="NAME=S")
    ap.add_argument("--budget", type=int, default=400_000, help="tokens of one pass over the mixture")
    ap.add_argument("--epochs", nargs=3, default=None, metavar="NAME=E", help="weight by epochs instead of shares")
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=200, help="training steps on the mixture (0: stop after mixing)")
    args = ap.parse_args(argv)
    from pipeline.paths import require_shared

    data = Path(args.data) if args.data else require_shared()
    out = Path(args.out).resolve()
    (out / "text").mkdir(parents=True, exist_ok=True)
    for name, docs in (("wiki", wiki_documents(data / "text" / "enwiki-excerpt-206-pages.xml.bz2")),
                       ("books", book_documents(data / "text" / "botchan.txt"))):
        with open(out / "text" / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for doc in docs:
                fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    refinery("run", "refinedweb_fast", "--input", *[f"web={data / 'warc' / w}" for w in args.warc], "--output",
             out / "refined" / "web", "--no-funnel")
    # curated text: no HTML to extract, and no crawl URL (RefinedWeb's URL filter removes Wikipedia and Gutenberg
    # pages from web data on purpose, so that they can be added as curated sources: these rows carry no URL)
    for name in ("wiki", "books"):
        refinery("run", "rw_raw", "--input", f"{name}={out / 'text' / f'{name}.jsonl'}", "--output",
                 out / "refined" / name, "--no-funnel")
    refinery("train-tokenizer", "--input", f"{out / 'refined'}/*/documents/*.arrow", "--output", out / "tokenizer",
             "--vocab-size", args.vocab_size, "--no-progress")
    for name in ("web", "wiki", "books"):
        refinery("tokenize", "--input", out / "refined" / name / "documents", "--tokenizer",
                 out / "tokenizer" / "tokenizer.json", "--output", out / "tokens" / name, "--val-fraction", "0.1",
                 "--num-shards", "2", "--no-progress")
    sources = [f"--source={n}={out / 'tokens' / n}" for n in ("web", "wiki", "books")]
    weights = ["--epochs", *args.epochs] if args.epochs else ["--shares", *args.shares, "--budget", args.budget]
    refinery("mix", *sources, *weights, "--output", out / "mixture.json")
    if args.steps:
        refinery("pretrain", "--tokens", out / "mixture.json", "--out", out / "run", "--preset", "tiny", "--block-size",
                 128, "--batch-size", 8, "--max-steps", args.steps, "--eval-every", max(1, args.steps // 5),
                 "--eval-steps", 4, "--ckpt-every", args.steps, "--log-every", 10, "--no-progress")
    return 0


if __name__ == "__main__":
    sys.exit(main())

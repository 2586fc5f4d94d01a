"""Benchmark of the heuristic filter stages against straightforward versions of the same signals.

For each stage (url_filter, normalize, gopher_repetition, gopher_quality, line_corrections,
c4_filters, fineweb_filters) it prints documents/s per core (CPU time of this single process, so
other load on the machine matters less) for the stage and for a plain reference implementation
written here the obvious way (Counter of joined n-grams, per-character loops, ftfy on every text,
a linear scan over block-list URL entries, ...), the speed ratio, and whether both take the same
keep/reject decision on every document (they must: the baselines are the specification).

Then the filters' total CPU time per document, next to trafilatura's extraction time per page
measured in the same process on the shared article-extraction benchmark pages (the goal is that
all filters together cost < 10% of extraction), and the load time / memory of the hashed domain
set for a synthetic block list of ``--domains`` entries (RefinedWeb's UT1 adult list has 4.6M).

Input: the 697 real Common Crawl documents of ``cc/cc-main-2019-30-extracted.jsonl.gz`` (text
and URL), processed ``--repeat`` times; the UT1 folder of the shared data for the URL filter.

    .venv/bin/python bench/bench_filters.py --repeat 3 --extract-pages 40 --domains 1000000
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import random
import re
import string
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("WEBREFINERY_DATA", REPO.parent / "shared" / "data")).resolve()

from pipeline.document import make_document  # noqa: E402
from pipeline.stages.base import apply_stage  # noqa: E402
from pipeline.stages.c4_filters import C4Filters, C4FiltersParams  # noqa: E402
from pipeline.stages.fineweb_filters import FineWebFilters, FineWebFiltersParams  # noqa: E402
from pipeline.stages.gopher_quality import BULLETS, GopherQuality, GopherQualityParams  # noqa: E402
from pipeline.stages.gopher_repetition import GopherRepetition, GopherRepetitionParams  # noqa: E402
from pipeline.stages.line_corrections import (  # noqa: E402
    _LEADING_CTA_RE,
    _TRAILING_CTA_RE,
    LineCorrections,
    LineCorrectionsParams,
    is_counter_line,
)
from pipeline.stages.normalize import Normalize, _ftfy_config  # noqa: E402
from pipeline.stages.text_utils import PUNCTUATION, split_words  # noqa: E402
from pipeline.stages.url_filter import WORDS_DIR, UrlFilter, UrlFilterParams, read_word_list  # noqa: E402


def _shared(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        raise SystemExit(f"shared data file {path} is missing (set WEBREFINERY_DATA)")
    return path


def load_documents():
    docs = []
    with gzip.open(_shared("cc", "cc-main-2019-30-extracted.jsonl.gz"), "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            row = json.loads(line)
            docs.append(make_document(id=str(i), text=row["text"], url=row["metadata"].get("warc_url")))
    return docs


# ------------------------------------------------------------------ straightforward baselines
# Each returns the rule name that rejects the text (or None), computing the signals the obvious way.


def baseline_repetition(text: str, p: GopherRepetitionParams):
    lines = [l.strip() for l in text.split("\n") if l.strip()]
    paras = [q.strip() for q in re.split(r"\n\s*\n", text) if q.strip()]

    def dups(items):
        seen, n, chars = set(), 0, 0
        for x in items:
            if x in seen:
                n += 1
                chars += len(x)
            seen.add(x)
        return n, chars

    dl, dlc = dups(lines)
    dp, dpc = dups(paras)
    sig = {
        "dup_line_frac": dl / len(lines) if lines else 0,
        "dup_para_frac": dp / len(paras) if paras else 0,
        "dup_line_char_frac": dlc / len(text) if text else 0,
        "dup_para_char_frac": dpc / len(text) if text else 0,
    }
    words = split_words(text)
    total = sum(len(w) for w in words)
    for n in range(2, 11):
        grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        counts = collections.Counter(grams)
        if n <= 4:
            value = 0.0
            if counts and total:
                top = max(counts.values())
                if top >= 2:
                    best = max(len(g) - (n - 1) for g, c in counts.items() if c == top)
                    value = top * best / total
            sig[f"top_{n}gram"] = value
        else:
            covered = [False] * len(words)
            for i, g in enumerate(grams):
                if counts[g] >= 2:
                    for j in range(i, i + n):
                        covered[j] = True
            sig[f"dup_{n}gram"] = sum(len(w) for w, c in zip(words, covered) if c) / total if total else 0.0
    limits = {
        "dup_line_frac": p.dup_line_frac, "dup_para_frac": p.dup_para_frac,
        "dup_line_char_frac": p.dup_line_char_frac, "dup_para_char_frac": p.dup_para_char_frac,
        **{f"top_{n}gram": getattr(p, f"top_{n}gram_frac") for n in (2, 3, 4)},
        **{f"dup_{n}gram": getattr(p, f"dup_{n}gram_frac") for n in range(5, 11)},
    }
    for rule, limit in limits.items():
        if sig[rule] > limit:
            return rule
    return None


def baseline_quality(text: str, p: GopherQualityParams):
    tokens = split_words(text)
    words = []
    for t in tokens:
        w = t.strip(PUNCTUATION)
        if w:
            words.append(w)
    n = len(words)
    stop = set(p.stop_words)
    n_stop = sum(1 for w in words if w.lower() in stop)
    alpha = sum(1 for t in tokens if any(c.isalpha() for c in t))
    lines = [l.strip() for l in text.split("\n") if l.strip()]
    symbols = text.count("#") + text.count("...") + text.count("…")
    mean = sum(len(w) for w in words) / n if n else 0.0
    if n < p.min_words:
        return "min_words"
    if n > p.max_words:
        return "max_words"
    if mean < p.min_mean_word_length:
        return "min_mean_word_length"
    if mean > p.max_mean_word_length:
        return "max_mean_word_length"
    if symbols / n > p.max_symbol_word_ratio:
        return "symbol_word_ratio"
    if lines and sum(1 for l in lines if l.startswith(BULLETS)) / len(lines) > p.max_bullet_lines_frac:
        return "bullet_lines"
    if lines and sum(1 for l in lines if l.endswith(("...", "…"))) / len(lines) > p.max_ellipsis_lines_frac:
        return "ellipsis_lines"
    if tokens and alpha / len(tokens) < p.min_alpha_words_frac:
        return "alpha_words"
    if n_stop < p.min_stop_words:
        return "stop_words"
    return None


def baseline_line_corrections(text: str, p: LineCorrectionsParams):
    total = removed = 0
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        total += len(split_words(line))
        # call-to-action fragments: the same patterns, applied without the first/last-word guards
        while True:
            m = _LEADING_CTA_RE.search(line)
            if not m or m.end() == 0:
                break
            removed += len(m.group(0).split())
            line = line[m.end() :]
        while line:
            m = _TRAILING_CTA_RE.search(line)
            if not m or m.start() == len(line):
                break
            removed += len(m.group(0).split())
            line = line[: m.start()].rstrip()
        line = line.strip()
        if not line:
            continue
        letters = [c for c in line if c.isalpha()]
        upper = sum(1 for c in letters if c.isupper())
        numeric = not letters and any(c.isdigit() for c in line)
        single = len(line.split()) == 1 and len(split_words(line)) == 1
        if is_counter_line(line) or numeric or (letters and upper / len(letters) > p.uppercase_fraction) or single:
            removed += len(split_words(line))
    return "too_many_removed" if total and removed / total > p.max_removed_fraction else None


_FTFY = None


def baseline_normalize(text: str):
    return "empty" if not baseline_normalized_text(text) else None


def baseline_normalized_text(text: str) -> str:
    import ftfy

    global _FTFY
    if _FTFY is None:
        _FTFY = _ftfy_config()
    text = ftfy.fix_text(text, _FTFY)
    text = re.sub("\r\n|[\r\x0b\x0c\x85\u2028\u2029]", "\n", text)
    text = unicodedata.normalize("NFC", text)
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")
    text = re.sub("[\ufeff\u200b\u00ad]", "", text)
    text = "".join(" " if unicodedata.category(c) == "Zs" else c for c in text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = "\n".join(l.strip() for l in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def compare_normalized_texts(docs) -> None:
    """The stage's text (ftfy only where the mojibake pre-check fires) vs the baseline's (ftfy on
    every text): they must be identical."""
    stage = Normalize()
    stage.setup()
    differ = sum(1 for d in docs if apply_stage(stage, d)[0]["text"] != baseline_normalized_text(d["text"]))
    fixed = sum(1 for d in docs if apply_stage(stage, d)[0]["normalize_mojibake_fixed"])
    print(f"{'':<18} normalize: texts differing from ftfy-on-everything: {differ}; mojibake repaired: {fixed}")


def baseline_c4(text: str, p: C4FiltersParams):
    sentences, lorem, curly = 0, False, False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        words = line.split()
        if any(len(w) > p.max_word_length for w in words):
            continue
        line = re.sub(r"\[\d*\]|\[edit\]|\[citation needed\]", "", line, flags=re.I)
        if not line.endswith(tuple(p.terminal_punctuation)) or line.endswith("..."):
            continue
        if len(words) < p.min_words_per_line:
            continue
        low = line.lower()
        lorem |= "lorem ipsum" in low
        if "javascript" in low:
            continue
        curly |= "{" in line
        if any(s in low for s in ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")):
            continue
        sentences += max(1, len(re.findall(r"[.!?]+[\"'”’)\]]*(?=\s|$)", line)))
    if lorem:
        return "lorem_ipsum"
    if curly:
        return "curly_bracket"
    return "too_few_sentences" if sentences < p.min_sentences else None


def baseline_fineweb(text: str, p: FineWebFiltersParams):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    if not lines:
        return "line_punct_ratio"
    if sum(l.endswith(tuple(p.terminal_punctuation)) for l in lines) / len(lines) <= p.min_line_punct_ratio:
        return "line_punct_ratio"
    counts = collections.Counter()
    dup = 0
    for l in lines:
        if counts[l]:
            dup += len(l)
        counts[l] += 1
    if dup / sum(len(l) for l in lines) >= p.max_dup_line_char_frac:
        return "dup_line_char_frac"
    if sum(len(l) <= p.short_line_length for l in lines) / len(lines) >= p.max_short_line_ratio:
        return "short_line_ratio"
    return None


class BaselineUrlFilter:
    """Plain set of block-listed domains, a linear scan over the URL entries, one substring test
    per strict word, re.findall per URL for the word tiers."""

    def __init__(self, root: Path, categories, params: UrlFilterParams):
        self.domains = set()
        self.url_entries = []
        for cat in categories:
            for name, target in (("domains", self.domains), ("urls", None)):
                path = root / cat / name
                if not path.is_file():
                    continue
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                    line = line.split("#", 1)[0].strip().lower()
                    if not line:
                        continue
                    if target is not None:
                        target.add(line)
                    else:
                        line = re.sub(r"^[a-z][a-z0-9+.-]*://", "", line)
                        self.url_entries.append(re.sub(r"^www\d*\.", "", line))
        self.strict = [w.replace("-", "").replace(".", "") for w in read_word_list(WORDS_DIR / "strict.txt")]
        self.hard = set(read_word_list(WORDS_DIR / "hard.txt"))
        self.soft = set(read_word_list(WORDS_DIR / "soft.txt"))
        self.curated = set(read_word_list(WORDS_DIR / "curated_domains.txt"))
        self.p = params

    def decide(self, url: str):
        if not url:
            return None
        parts = urlsplit(url if "://" in url else "http://" + url)
        host = (parts.hostname or "").rstrip(".")
        path = parts.path + ("?" + parts.query if parts.query else "")
        labels = host.split(".")
        suffixes = [".".join(labels[i:]) for i in range(len(labels))] if host else []
        if any(s in self.domains for s in suffixes):
            return "blocklist_domain"
        for entry in self.url_entries:
            ehost, _, epath = entry.partition("/")
            epath = "/" + epath if _ else ""
            if any(s == ehost for s in suffixes) and path.lower().startswith(epath):
                return "blocklist_url"
        from urllib.parse import unquote

        flat = (host + unquote(path)).lower()
        squashed = flat.replace("-", "").replace(".", "")
        if any(w in squashed for w in self.strict):
            return "strict_word"
        words = set(re.findall(r"[^\W_]+", flat))
        if words & self.hard:
            return "hard_word"
        if len(words & self.soft) >= self.p.soft_threshold:
            return "soft_words"
        if self.p.exclude_curated and any(s in self.curated for s in suffixes):
            return "curated_domain"
        return None


# ------------------------------------------------------------------ timing


def cpu_time(fn, repeat: int) -> float:
    """Best CPU time over ``repeat`` runs of ``fn()``."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def bench_stage(name, stage, baseline, docs, repeat):
    stage.setup()
    decisions = {}

    def run_stage():
        for d in docs:
            _, why = apply_stage(stage, d)
            decisions[d["id"]] = why.split(":", 1)[1] if why else None

    def run_baseline():
        for d in docs:
            baseline(d)

    t_stage = cpu_time(run_stage, repeat)
    base_decisions = {d["id"]: baseline(d) for d in docs}
    t_base = cpu_time(run_baseline, repeat)
    differ = sum(1 for k in decisions if decisions[k] != base_decisions[k])
    n = len(docs)
    print(
        f"{name:<18} {n / t_stage:>10.0f} {n / t_base:>10.0f} {t_base / t_stage:>7.2f}x "
        f"{t_stage / n * 1e3:>9.3f} {differ:>8d}   rejected {sum(v is not None for v in decisions.values())}"
    )
    return t_stage / n


def bench_extraction(pages: int, repeat: int) -> float:
    import trafilatura

    files = sorted(_shared("html", "article-extraction-benchmark").glob("*.html.gz"))[:pages]
    htmls = [gzip.open(f, "rt", encoding="utf-8", errors="replace").read() for f in files]

    def run():
        for h in htmls:
            trafilatura.extract(h, favor_precision=True, deduplicate=False)

    t = cpu_time(run, max(1, repeat - 1))
    return t / len(htmls)


def bench_domain_load(n_domains: int):
    rng = random.Random(0)
    alphabet = string.ascii_lowercase + string.digits
    with tempfile.TemporaryDirectory() as tmp:
        cat = Path(tmp) / "adult"
        cat.mkdir()
        with open(cat / "domains", "w") as f:
            for _ in range(n_domains):
                name = "".join(rng.choices(alphabet, k=rng.randint(5, 15)))
                f.write(f"{name}.{rng.choice(['com', 'net', 'org', 'de', 'co.uk', 'ru'])}\n")
        size_mb = (cat / "domains").stat().st_size / 1e6
        t = time.perf_counter()
        stage = UrlFilter(UrlFilterParams(blocklist_dir=tmp, categories=["adult"]))
        stage.setup()
        load_s = time.perf_counter() - t
        table_mb = (stage._blocklist.domains._hashes.nbytes + stage._blocklist.domains._cats.nbytes) / 1e6
        t = time.process_time()
        for i in range(20000):
            stage.url_hits(f"https://www.site{i}.example.com/path/page-{i}.html")
        lookup_us = (time.process_time() - t) / 20000 * 1e6
    print(
        f"synthetic block list: {n_domains:,} domains ({size_mb:.0f} MB file) loaded in {load_s:.2f} s, "
        f"table {table_mb:.0f} MB (a Python set of the same strings: ~{n_domains * 100 / 1e6:.0f} MB), "
        f"{lookup_us:.1f} us per URL (all rules)"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="passes over the documents (best is kept)")
    ap.add_argument("--extract-pages", type=int, default=40, help="article pages for the trafilatura reference (0: skip)")
    ap.add_argument("--domains", type=int, default=1_000_000, help="synthetic block-list size (0: skip)")
    args = ap.parse_args()

    docs = load_documents()
    chars = sum(len(d["text"]) for d in docs)
    print(f"{len(docs)} real CC documents, {chars / len(docs):.0f} characters on average; best of {args.repeat} passes")
    print(f"{'stage':<18} {'docs/s':>10} {'baseline':>10} {'speedup':>8} {'ms/doc':>9} {'decisions differ':>8}")

    ut1 = _shared("blocklists", "ut1")
    categories = ["adult", "gambling", "dating", "mixed_adult"]
    up = UrlFilterParams(blocklist_dir=str(ut1), categories=categories)
    base_url = BaselineUrlFilter(ut1, categories, up)
    per_doc = {}
    per_doc["url_filter"] = bench_stage("url_filter", UrlFilter(up), lambda d: base_url.decide(d["url"]), docs, args.repeat)
    per_doc["normalize"] = bench_stage("normalize", Normalize(), lambda d: baseline_normalize(d["text"]), docs, args.repeat)
    compare_normalized_texts(docs)
    rp, qp, lp = GopherRepetitionParams(), GopherQualityParams(), LineCorrectionsParams()
    per_doc["gopher_repetition"] = bench_stage(
        "gopher_repetition", GopherRepetition(rp), lambda d: baseline_repetition(d["text"], rp), docs, args.repeat
    )
    per_doc["gopher_quality"] = bench_stage(
        "gopher_quality", GopherQuality(qp), lambda d: baseline_quality(d["text"], qp), docs, args.repeat
    )
    per_doc["line_corrections"] = bench_stage(
        "line_corrections", LineCorrections(lp), lambda d: baseline_line_corrections(d["text"], lp), docs, args.repeat
    )
    cp, fp = C4FiltersParams(), FineWebFiltersParams()
    per_doc["c4_filters"] = bench_stage("c4_filters", C4Filters(cp), lambda d: baseline_c4(d["text"], cp), docs, args.repeat)
    per_doc["fineweb_filters"] = bench_stage(
        "fineweb_filters", FineWebFilters(fp), lambda d: baseline_fineweb(d["text"], fp), docs, args.repeat
    )

    refinedweb = ["url_filter", "gopher_repetition", "gopher_quality", "line_corrections", "normalize"]
    rw_ms = sum(per_doc[s] for s in refinedweb) * 1e3
    all_ms = sum(per_doc.values()) * 1e3
    print(f"\nfilters, every document through every stage: RefinedWeb set ({', '.join(refinedweb)}) "
          f"{rw_ms:.2f} ms/doc; all seven {all_ms:.2f} ms/doc")
    if args.extract_pages:
        ext = bench_extraction(args.extract_pages, args.repeat) * 1e3
        print(f"trafilatura.extract on {args.extract_pages} shared article pages: {ext:.1f} ms/page "
              f"({1e3 / ext:.0f} pages/s per core)")
        print(f"filters / extraction: RefinedWeb set {rw_ms / ext:.1%}, all seven {all_ms / ext:.1%} (goal < 10%)")
    if args.domains:
        bench_domain_load(args.domains)


if __name__ == "__main__":
    main()

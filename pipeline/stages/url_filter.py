"""RefinedWeb's URL filtering: a domain/URL block list, URL word scores, curated-corpus domains.

Three independent rules, checked in this order (the first hit decides the reason):

(a) **Block list** in the UT1 folder format (``<root>/<category>/domains`` and
    ``<root>/<category>/urls``, one entry per line; RefinedWeb used the ``adult`` category, 4.6M
    domains). ``url_filter:blocklist_domain`` when the URL's host or any parent domain of it is
    listed in ``domains`` (``a.b.example.com`` is checked as ``a.b.example.com``,
    ``b.example.com``, ``example.com``, ``com``: the registered domain is one of these, and a
    listed domain blocks all its sub-domains, as squidGuard does; so no public-suffix list, and no
    ``tldextract``, is needed). ``url_filter:blocklist_url`` when an entry of ``urls`` (a
    ``host/path`` prefix; ``www.`` dropped) has the URL's host or a parent domain as host and its
    path as a prefix of the URL's path+query. URLs are normalized first: scheme, user info, port
    and fragment removed, lower case, percent-decoded, host in punycode (entries too). A category
    folder needs a ``domains`` or a ``urls`` file (the public repository ships ``adult/`` without
    ``domains`` because of its size); a missing root, category or both files is a clear error.

    Memory: a Python set of the 4.6M adult domains costs ~460 MB per worker process, so domains
    are kept as a sorted ``numpy`` array of their 64-bit string hashes plus a 2-byte category
    index (10 bytes per entry, ~46 MB) and looked up
    with one ``searchsorted`` over the host's suffixes (O(log n), a few microseconds per URL).
    Loading reads the file in 8 MB chunks (one ``split``, one hash per line, no per-line regex)
    and sorts once: 4.6M synthetic domains load in a few seconds (``bench/bench_filters.py
    --domains 4600000`` prints the time and table size).
    A false match needs a 64-bit hash collision (~4.6M / 2^64 per lookup: never in practice).
    The hash is Python's ``hash``, salted per process, so the table is rebuilt in each worker
    (``setup``) and never pickled.

(b) **URL word scores**, three tiers from data files (``pipeline/data/url_words``, or
    ``word_lists_dir``): ``strict.txt`` sub-strings anywhere in the URL after deleting ``-`` and
    ``.`` (one hit: ``url_filter:strict_word``), ``hard.txt`` whole words (one hit:
    ``url_filter:hard_word``), ``soft.txt`` whole words (``soft_threshold`` distinct hits, default
    2: ``url_filter:soft_words``). Words are the URL (scheme removed, lower case, percent-decoded)
    split on every non-alphanumeric character. The lists and why each word is in its tier are
    documented in the files (adult content only, chosen to avoid false positives such as
    "essex" or "sussex").

(c) **Curated-corpus domains** (``curated_domains.txt``: wikipedia.org, arxiv.org, github.com,
    ...; switch ``exclude_curated``): ``url_filter:curated_domain`` when the host or a parent
    domain is listed, so the corpus stays "web only".

Documents without a URL pass untouched (their columns are null). Columns: ``url_filter_hit``
(string: every rule that matched, ``"rule=detail"`` joined by ``"; "``, the deciding one first,
e.g. ``"blocklist_domain=adult:example.com; soft_words=nude,sexy"``; null when nothing matched)
and ``url_soft_words`` (int32: distinct soft words, for re-thresholding).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import unquote

import numpy as np
import pyarrow as pa

from pipeline.stages.base import DocumentStage, Param, ParamError, register

WORDS_DIR = Path(__file__).resolve().parents[1] / "data" / "url_words"

_SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]{0,15}://")
_WWW_RE = re.compile(r"^www\d*\.")
_IPV4_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_URL_WORD_SPLIT_RE = re.compile(r"[\W_]+")


def read_word_list(path: Path) -> List[str]:
    """Entries of a list file: one per line, ``#`` starts a comment, blank lines ignored, lower-cased."""
    if not path.is_file():
        raise FileNotFoundError(f"url_filter: word list {path} does not exist")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip().lower()
        if entry:
            out.append(entry)
    return out


def ascii_host(host: str) -> str:
    """An internationalized host name in its ASCII (punycode) form, as block lists write it."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def split_url(url: str) -> Tuple[str, str]:
    """(host, path-and-query) of a URL: scheme, user info, port and fragment removed, host
    lower-cased without a trailing dot; the path starts with ``/`` (or is empty)."""
    u = url.strip()
    m = _SCHEME_RE.match(u)
    if m:
        u = u[m.end() :]
    elif u.startswith("//"):
        u = u[2:]
    cut = len(u)
    for sep in "/?#":
        i = u.find(sep)
        if 0 <= i < cut:
            cut = i
    hostport, rest = u[:cut], u[cut:]
    if "@" in hostport:
        hostport = hostport.rsplit("@", 1)[1]
    if hostport.startswith("["):  # IPv6 literal
        host = hostport[: hostport.find("]") + 1] if "]" in hostport else hostport
    else:
        host = hostport.split(":", 1)[0]
    host = ascii_host(host.lower().rstrip("."))
    hash_at = rest.find("#")
    if hash_at >= 0:
        rest = rest[:hash_at]
    if rest and not rest.startswith("/"):
        rest = "/" + rest
    return host, rest.lower()


def host_suffixes(host: str) -> List[str]:
    """The host and all its parent domains, longest first (an IPv4 address only itself)."""
    if not host:
        return []
    if _IPV4_RE.match(host) or host.startswith("["):
        return [host]
    out = [host]
    i = host.find(".")
    while i >= 0:
        host = host[i + 1 :]
        if host:
            out.append(host)
        i = host.find(".")
    return out


class HashedDomainSet:
    """A large set of domain strings stored as a sorted array of their 64-bit hashes, with the
    category index of each entry. Lookup returns the first listed candidate and its category.

    Built from chunks of entries (``(category index, iterable of lists of domains)``), so a list
    of millions of lines never sits in memory as Python strings all at once."""

    def __init__(self, chunks_by_category: Iterable[Tuple[int, Iterable[List[str]]]]):
        hashes = []
        cats = []
        self.n_entries = 0
        for cat, chunks in chunks_by_category:
            for domains in chunks:
                h = np.fromiter(map(hash, domains), dtype=np.int64, count=len(domains))
                hashes.append(h)
                cats.append(np.full(len(h), cat, dtype=np.int16))
                self.n_entries += len(h)
        if hashes:
            all_h = np.concatenate(hashes)
            all_c = np.concatenate(cats)
            order = np.argsort(all_h, kind="stable")
            self._hashes = all_h[order]
            self._cats = all_c[order]
        else:
            self._hashes = np.zeros(0, dtype=np.int64)
            self._cats = np.zeros(0, dtype=np.int16)

    def __len__(self) -> int:
        return len(self._hashes)

    def first_match(self, candidates: Sequence[str]) -> Optional[Tuple[str, int]]:
        """(first candidate that is in the set, its category index), or None."""
        if not candidates or not len(self._hashes):
            return None
        q = np.fromiter(map(hash, candidates), dtype=np.int64, count=len(candidates))
        idx = np.searchsorted(self._hashes, q)
        np.minimum(idx, len(self._hashes) - 1, out=idx)
        found = np.flatnonzero(self._hashes[idx] == q)
        if not len(found):
            return None
        k = int(found[0])
        return candidates[k], int(self._cats[idx[k]])


class UT1Blocklist:
    """The UT1 block lists of some categories: domains (hashed set) and URL prefixes."""

    def __init__(self, root: str | Path, categories: Sequence[str]):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"url_filter: block list folder {root} does not exist (expected the UT1 layout "
                "<root>/<category>/domains and <root>/<category>/urls)"
            )
        self.categories = list(categories)
        domains_by_cat = []
        # host -> (sorted distinct prefix lengths, {prefix: category index})
        url_index: Dict[str, Tuple[Tuple[int, ...], Dict[str, int]]] = {}
        url_prefixes: Dict[str, Dict[str, int]] = {}
        self.n_urls = 0
        for ci, cat in enumerate(self.categories):
            cat_dir = root / cat
            if not cat_dir.is_dir():
                have = sorted(p.name for p in root.iterdir() if p.is_dir())
                raise FileNotFoundError(f"url_filter: category '{cat}' not found in {root} (available: {have})")
            dom_file, url_file = cat_dir / "domains", cat_dir / "urls"
            if not dom_file.is_file() and not url_file.is_file():
                raise FileNotFoundError(f"url_filter: category folder {cat_dir} has neither a 'domains' nor a 'urls' file")
            if dom_file.is_file():
                domains_by_cat.append((ci, iter_list_chunks(dom_file)))
            if url_file.is_file():
                for entry in read_list_lines(url_file):
                    entry = _SCHEME_RE.sub("", entry)
                    entry = _WWW_RE.sub("", entry)
                    slash = entry.find("/")
                    host, prefix = (entry, "") if slash < 0 else (entry[:slash], entry[slash:])
                    host = host.split(":", 1)[0].rstrip(".")
                    if "%" in prefix:  # compare decoded paths ("caf%C3%A9" == "café")
                        prefix = unquote(prefix)
                    if host:
                        url_prefixes.setdefault(host, {}).setdefault(prefix, ci)
                        self.n_urls += 1
        self.domains = HashedDomainSet(domains_by_cat)
        self.n_domains = self.domains.n_entries
        for host, prefixes in url_prefixes.items():
            url_index[host] = (tuple(sorted({len(p) for p in prefixes})), prefixes)
        self.url_index = url_index

    def match_domain(self, suffixes: Sequence[str]) -> Optional[str]:
        """``"category:domain"`` for the first listed suffix of the host, or None."""
        hit = self.domains.first_match(suffixes)
        if hit is None:
            return None
        return f"{self.categories[hit[1]]}:{hit[0]}"

    def match_url(self, suffixes: Sequence[str], rest: str) -> Optional[str]:
        """``"category:host/prefix"`` for the first ``urls`` entry matching the URL, or None."""
        index = self.url_index
        for host in suffixes:
            entry = index.get(host)
            if entry is None:
                continue
            lengths, prefixes = entry
            for n in lengths:
                if n > len(rest):
                    break
                cat = prefixes.get(rest[:n])
                if cat is not None:
                    return f"{self.categories[cat]}:{host}{rest[:n]}"
        return None


def _clean_list_text(data: str) -> List[str]:
    """Entries of a chunk of a list file: lower-cased, blank lines and ``#`` comments dropped
    (fast path: one ``split`` when the chunk has no comment)."""
    data = data.lower()
    if "#" in data:
        entries = [s for s in (line.split("#", 1)[0].strip() for line in data.splitlines()) if s]
    else:
        entries = data.split()
    if not data.isascii():  # internationalized names: compare in punycode, as URLs are
        entries = [e if e.isascii() else _ascii_entry(e) for e in entries]
    return entries


def _ascii_entry(entry: str) -> str:
    host, slash, path = entry.partition("/")
    return ascii_host(host) + slash + path


def read_list_lines(path: Path) -> List[str]:
    """All entries of a UT1 list file (see ``_clean_list_text``)."""
    return _clean_list_text(path.read_text(encoding="utf-8", errors="replace"))


def iter_list_chunks(path: Path, chunk_chars: int = 8 << 20) -> Iterator[List[str]]:
    """Entries of a UT1 list file, ``chunk_chars`` characters (whole lines) at a time."""
    with open(path, encoding="utf-8", errors="replace") as f:
        while True:
            data = f.read(chunk_chars)
            if not data:
                return
            if not data.endswith("\n"):
                data += f.readline()
            yield _clean_list_text(data)


@register
class UrlFilter(DocumentStage):
    """Reject URLs on the block list, with adult words, or from curated-corpus domains."""

    name = "url_filter"
    parameters = (
        Param("blocklist_dir", None, kind="any", type=Optional[str]),  # None: block-list rule off
        Param("categories", ("adult",), kind="strings", what="category names"),
        Param("use_word_scores", True, kind="bool"),
        Param("soft_threshold", 2, lo=1),
        Param("exclude_curated", True, kind="bool"),
        Param("word_lists_dir", None, kind="any", type=Optional[str]),  # None: the bundled pipeline/data/url_words
    )
    signal_columns = {"url_filter_hit": pa.string(), "url_soft_words": pa.int32()}

    @staticmethod
    def validate_params(params) -> None:
        """The folders named exist and hold the lists asked for."""
        s = "url_filter"
        if params.blocklist_dir is not None:
            if not params.categories:
                raise ParamError(f"stage '{s}': 'categories' is empty but 'blocklist_dir' is set")
            if not Path(params.blocklist_dir).is_dir():
                raise ParamError(f"stage '{s}': 'blocklist_dir' {params.blocklist_dir!r} is not a folder")
            for cat in params.categories:
                cat_dir = Path(params.blocklist_dir) / cat
                if not ((cat_dir / "domains").is_file() or (cat_dir / "urls").is_file()):
                    raise ParamError(
                        f"stage '{s}': category '{cat}' has no 'domains' or 'urls' file under {params.blocklist_dir!r}"
                    )
        if params.word_lists_dir is not None and not Path(params.word_lists_dir).is_dir():
            raise ParamError(f"stage '{s}': 'word_lists_dir' {params.word_lists_dir!r} is not a folder")

    def setup(self) -> None:
        p = self.params
        words_dir = Path(p.word_lists_dir) if p.word_lists_dir else WORDS_DIR
        self._blocklist = UT1Blocklist(p.blocklist_dir, p.categories) if p.blocklist_dir else None
        strict = sorted({w.replace("-", "").replace(".", "") for w in read_word_list(words_dir / "strict.txt")})
        self._strict_re = re.compile("|".join(map(re.escape, strict))) if strict else None
        self._hard = frozenset(read_word_list(words_dir / "hard.txt"))
        self._soft = frozenset(read_word_list(words_dir / "soft.txt"))
        self._curated = frozenset(read_word_list(words_dir / "curated_domains.txt"))
        self._ready = True

    _LOADED = ("_blocklist", "_strict_re", "_hard", "_soft", "_curated", "_ready")

    def __getstate__(self):
        # Loaded tables use the per-process string hash: never ship them; setup() rebuilds.
        return {k: v for k, v in self.__dict__.items() if k not in self._LOADED}

    def url_hits(self, url: str) -> Tuple[List[Tuple[str, str]], int]:
        """([(rule, detail), ...] in rule order, number of distinct soft words) for ``url``."""
        host, rest = split_url(url)
        if "%" in rest:  # percent-decoded, as block-list entries are compared
            rest = unquote(rest)
        suffixes = host_suffixes(host)
        hits: List[Tuple[str, str]] = []
        if self._blocklist is not None:
            d = self._blocklist.match_domain(suffixes)
            if d:
                hits.append(("blocklist_domain", d))
            u = self._blocklist.match_url(suffixes, rest)
            if u:
                hits.append(("blocklist_url", u))
        n_soft = 0
        if self.params.use_word_scores:
            flat = host + rest
            if self._strict_re is not None:
                m = self._strict_re.search(flat.replace("-", "").replace(".", ""))
                if m:
                    hits.append(("strict_word", m.group(0)))
            words = set(_URL_WORD_SPLIT_RE.split(flat))
            hard = sorted(words & self._hard)
            if hard:
                hits.append(("hard_word", ",".join(hard)))
            soft = sorted(words & self._soft)
            n_soft = len(soft)
            if n_soft >= self.params.soft_threshold:
                hits.append(("soft_words", ",".join(soft)))
        if self.params.exclude_curated:
            for s in suffixes:
                if s in self._curated:
                    hits.append(("curated_domain", s))
                    break
        return hits, n_soft

    def process(self, doc) -> Optional[str]:
        if not getattr(self, "_ready", False):
            self.setup()
        url = doc.get("url")
        if not url:
            doc["url_filter_hit"] = None
            doc["url_soft_words"] = None
            return None
        hits, n_soft = self.url_hits(url)
        doc["url_filter_hit"] = "; ".join(f"{r}={d}" for r, d in hits) if hits else None
        doc["url_soft_words"] = n_soft
        return hits[0][0] if hits else None


UrlFilterParams = UrlFilter.Params

"""The mixture manifest: several token sets, each with a weight, as one training stream (no data copied).

The Pile's way (Gao et al. 2020): every component has a number of *epochs* (Wikipedia and books about 3,
Pile-CC about 1.2), or the user names target *shares* of a token budget (DCLM's sampling frequencies,
NeMo Curator's ``blend_datasets``). Either way the plan is, per source, how many of its tokens the
mixture holds: ``epochs x train tokens``; its share is that over the total. ``refinery mix`` writes the
plan (``plan_mixture`` -> ``mixture.json``) and prints it (``format_table``, the Pile paper's Table 1);
the trainer reads it (``model/data.py``: ``TokenMixture``, ``MixtureLoader``).

``mixture.json`` (``FORMAT_NAME``, version ``FORMAT_VERSION``)::

    {"format": "webrefinery-token-mixture", "version": 1, "weighting": "epochs"|"shares",
     "budget_tokens": int|null, "total_tokens": int,
     "vocab_size": int, "eot_id": int, "dtype": str, "tokenizer_sha256": str|null,
     "sources": [{"name": str, "path": str (relative to the mixture file's folder, or absolute),
                  "manifest_sha256": str, "tokens": int, "documents": int, "val_tokens": int,
                  "weight": float, "epochs": float, "mixture_tokens": int, "share": float}, ...]}

Rules (each violation is a ``FormatError`` naming the source): names are unique identifiers; every source
has a weight > 0; all sources were made with one tokenizer (same sha256, vocabulary and end-of-text id);
shares sum to 1 and need a budget; with epochs a budget may only lower the total (every source scaled
alike), never exceed what the epochs give; ``max_epochs`` caps how often share weighting may repeat a source.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from model.corridor import FormatError
from model.corridor.files import write_bytes_atomic
from model.corridor.token_shards import MANIFEST_NAME, read_manifest

FORMAT_NAME = "webrefinery-token-mixture"
FORMAT_VERSION = 1
KNOWN_VERSIONS = (1,)
MIXTURE_NAME = "mixture.json"
SHARE_TOLERANCE = 1e-6
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOKENIZER_KEYS = ("tokenizer_sha256", "vocab_size", "eot_id", "dtype")


def parse_assignments(items: Sequence[str], what: str) -> Dict[str, str]:
    """``["web=1.0", "wiki=3"]`` -> ``{"web": "1.0", "wiki": "3"}``; FormatError on a malformed or repeated name."""
    out: Dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not value.strip():
            raise FormatError(f"{what} {item!r} is not NAME=VALUE")
        if not _NAME_RE.match(name):
            raise FormatError(f"{what} {item!r}: source name {name!r} must be letters, digits, '_', '-' or '.'")
        if name in out:
            raise FormatError(f"{what}: source {name!r} is given twice")
        out[name] = value.strip()
    return out


def parse_weights(items: Sequence[str], what: str) -> Dict[str, float]:
    """``["web=0.8", ...]`` -> ``{"web": 0.8}``; every weight a finite number > 0 (FormatError naming the source)."""
    weights = {}
    for name, text in parse_assignments(items, what).items():
        try:
            value = float(text)
        except ValueError:
            raise FormatError(f"{what}: source {name!r} has weight {text!r}, not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise FormatError(f"{what}: source {name!r} has weight {text}; weights must be > 0")
        weights[name] = value
    return weights


def source_facts(name: str, folder) -> Dict[str, object]:
    """What the plan needs from one token set (its checked manifest): tokens, documents, tokenizer."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FormatError(f"source {name!r}: token folder {folder} does not exist (make it with `refinery tokenize`)")
    try:
        manifest = read_manifest(folder)
    except FormatError as e:
        raise FormatError(f"source {name!r}: {e}") from e
    if manifest is None:
        raise FormatError(f"source {name!r}: {folder} has no {MANIFEST_NAME} (is it a `refinery tokenize` output?)")
    splits = manifest["splits"]
    facts = {"name": name, "folder": str(folder.resolve()),
             "manifest_sha256": hashlib.sha256((folder / MANIFEST_NAME).read_bytes()).hexdigest(),
             "tokens": int(splits.get("train", {}).get("tokens", 0)),
             "documents": int(splits.get("train", {}).get("documents", 0)),
             "val_tokens": int(splits.get("val", {}).get("tokens", 0))}
    facts.update({k: manifest.get(k) for k in _TOKENIZER_KEYS})
    if facts["tokens"] <= 0:
        raise FormatError(f"source {name!r}: {folder} has no training tokens")
    return facts


def plan_mixture(sources: Sequence[Mapping[str, object]], *, epochs: Optional[Mapping[str, float]] = None,
                 shares: Optional[Mapping[str, float]] = None, budget: Optional[int] = None,
                 max_epochs: Optional[float] = None, relative_to=None) -> Dict[str, object]:
    """The mixture manifest for ``sources`` (``source_facts`` dicts) weighted by ``epochs`` or ``shares``.

    ``relative_to``: the folder the manifest will be written to (source paths are stored relative to it)."""
    if (epochs is None) == (shares is None):
        raise FormatError("give the weights either as epochs or as shares (not both, not neither)")
    weights = dict(epochs if epochs is not None else shares)
    names = [str(s["name"]) for s in sources]
    if not names:
        raise FormatError("a mixture needs at least one source")
    if len(set(names)) != len(names):
        raise FormatError(f"source names repeat: {names}")
    for name in names:
        if name not in weights:
            raise FormatError(f"source {name!r} has no weight")
    for name in weights:
        if name not in names:
            raise FormatError(f"weight given for {name!r}, which is not a source (sources: {names})")
    for name, w in weights.items():
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
            raise FormatError(f"source {name!r} has weight {w}; weights must be > 0")
    first = sources[0]
    for s in sources[1:]:
        for key in _TOKENIZER_KEYS:
            if s.get(key) != first.get(key):
                raise FormatError(f"source {s['name']!r} was tokenized differently from {first['name']!r} ({key} "
                                  f"{s.get(key)!r} vs {first.get(key)!r}): a mixture needs one tokenizer")
    if budget is not None and budget <= 0:
        raise FormatError(f"the token budget must be > 0, got {budget}")
    tokens = {str(s["name"]): int(s["tokens"]) for s in sources}
    if shares is not None:
        total_share = sum(weights.values())
        if abs(total_share - 1.0) > SHARE_TOLERANCE:
            raise FormatError(f"shares sum to {total_share:g}, not 1 ({', '.join(f'{n}={w:g}' for n, w in weights.items())})")
        if budget is None:
            raise FormatError("shares need a token budget (--budget TOKENS)")
        planned = {n: weights[n] * budget / tokens[n] for n in names}
        if max_epochs is not None:
            for n in names:
                if planned[n] > max_epochs:
                    raise FormatError(f"source {n!r}: a budget of {budget:,} tokens at share {weights[n]:g} reads its "
                                      f"{tokens[n]:,} tokens {planned[n]:.2f} times, more than --max-epochs {max_epochs:g}")
    else:
        planned = {n: weights[n] for n in names}
        total = sum(planned[n] * tokens[n] for n in names)
        if budget is not None:
            if budget > total * (1 + 1e-12):
                raise FormatError(f"the budget of {budget:,} tokens is larger than the epochs allow ({int(total):,} "
                                  f"tokens); raise the epochs or lower the budget")
            planned = {n: e * budget / total for n, e in planned.items()}
    mixture_tokens = {n: int(round(planned[n] * tokens[n])) for n in names}
    for n in names:
        if mixture_tokens[n] <= 0:
            raise FormatError(f"source {n!r} gets no tokens in this mixture (epochs {planned[n]:g})")
    total_tokens = sum(mixture_tokens.values())
    base = Path(relative_to).resolve() if relative_to is not None else None
    entries = []
    for s in sources:
        n = str(s["name"])
        folder = Path(str(s["folder"]))
        path = os.path.relpath(folder, base) if base is not None else str(folder)
        entries.append({"name": n, "path": path, "manifest_sha256": s["manifest_sha256"], "tokens": tokens[n],
                        "documents": int(s["documents"]), "val_tokens": int(s.get("val_tokens", 0)),
                        "weight": weights[n], "epochs": planned[n], "mixture_tokens": mixture_tokens[n],
                        "share": mixture_tokens[n] / total_tokens})
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "weighting": "shares" if shares is not None else "epochs",
            "budget_tokens": budget, "total_tokens": total_tokens,
            **{k: first.get(k) for k in _TOKENIZER_KEYS}, "sources": entries}


def mixture_problems(manifest: object, where: str = MIXTURE_NAME) -> List[str]:
    """What makes a mixture manifest unreadable by this code (empty when fine)."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return [f"{where} is not a {FORMAT_NAME} manifest (write one with `refinery mix`)"]
    if manifest.get("version") not in KNOWN_VERSIONS:
        return [f"{where} has {FORMAT_NAME} version {manifest.get('version')!r}, this code reads versions "
                f"{list(KNOWN_VERSIONS)}"]
    out = []
    sources = manifest.get("sources")
    if not isinstance(sources, list) or not sources:
        return [f"{where} lists no sources"]
    for i, s in enumerate(sources):
        missing = [k for k in ("name", "path", "epochs", "share", "tokens", "manifest_sha256") if k not in s]
        if missing:
            out.append(f"{where}: source {i} lacks {missing}")
        elif not (isinstance(s["epochs"], (int, float)) and s["epochs"] > 0):
            out.append(f"{where}: source {s['name']!r} has epochs {s['epochs']!r}; must be > 0")
    return out


def is_mixture(path) -> bool:
    """True when ``path`` is a mixture manifest (a file), or a folder holding ``mixture.json`` and no token set."""
    path = Path(path)
    if path.is_dir():
        return (path / MIXTURE_NAME).is_file() and not (path / MANIFEST_NAME).is_file()
    return path.is_file()


def read_mixture(path) -> Dict[str, object]:
    """The checked mixture manifest at ``path`` (file or folder), with ``"_dir"``: the folder source paths are
    relative to."""
    path = Path(path)
    if path.is_dir():
        path = path / MIXTURE_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path} is not a readable mixture manifest: {e}") from e
    problems = mixture_problems(manifest, str(path))
    if problems:
        raise FormatError(problems[0])
    manifest["_dir"] = str(path.parent.resolve())
    return manifest


def source_folder(manifest: Mapping[str, object], source: Mapping[str, object]) -> Path:
    """Where a source's token set is, resolving a relative path against the mixture file's folder."""
    p = Path(str(source["path"]))
    return p if p.is_absolute() else Path(str(manifest["_dir"])) / p


def check_source_unchanged(manifest: Mapping[str, object], source: Mapping[str, object]) -> Path:
    """The source's folder, after checking its manifest is the one the mixture was planned on."""
    folder = source_folder(manifest, source)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise FormatError(f"mixture source {source['name']!r}: {folder} holds no token set ({MANIFEST_NAME} missing)")
    if hashlib.sha256(path.read_bytes()).hexdigest() != source["manifest_sha256"]:
        raise FormatError(f"mixture source {source['name']!r}: {path} changed since the mixture was made (re-run "
                          f"`refinery mix`)")
    return folder


def write_mixture(path, manifest: Mapping[str, object]) -> Path:
    """Write ``manifest`` to ``path`` (a .json file, or a folder that gets ``mixture.json``) atomically."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / MIXTURE_NAME
    body = {k: v for k, v in manifest.items() if not k.startswith("_")}
    write_bytes_atomic(path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def format_table(manifest: Mapping[str, object]) -> str:
    """The mixture as the Pile paper's Table 1: per source its size, epochs and share of the mixture."""
    rows = [("Component", "Tokens", "Documents", "Mean tokens/doc", "Epochs", "Effective tokens", "Share")]
    for s in manifest["sources"]:
        docs = int(s.get("documents", 0))
        rows.append((str(s["name"]), f"{int(s['tokens']):,}", f"{docs:,}",
                     f"{int(s['tokens']) / docs:,.0f}" if docs else "-", f"{float(s['epochs']):.2f}",
                     f"{int(s['mixture_tokens']):,}", f"{100 * float(s['share']):.2f}%"))
    rows.append(("Total", f"{sum(int(s['tokens']) for s in manifest['sources']):,}",
                 f"{sum(int(s.get('documents', 0)) for s in manifest['sources']):,}", "", "",
                 f"{int(manifest['total_tokens']):,}", "100.00%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if j == 0 or j == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    budget = manifest.get("budget_tokens")
    lines.append(f"weighting: {manifest['weighting']}" + (f", budget {int(budget):,} tokens" if budget else "")
                 + f", tokenizer {str(manifest.get('tokenizer_sha256') or '-')[:12]}")
    return "\n".join(lines)

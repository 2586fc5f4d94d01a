"""Small helpers shared by the notebooks in this folder: where their inputs are, loading shards, showing things.

Every notebook reads its inputs from environment variables, so that you can point it at your own runs
(see README.md in this folder for the commands that make each input):

    WEBREFINERY_RUN        `refinery run ... --output DIR` folder            default: out
    WEBREFINERY_TOK        `refinery train-tokenizer --output DIR` folder    default: tok
                           (or the tokenizer.json file itself)
    WEBREFINERY_TRAIN_RUN  `refinery pretrain --out DIR` folder              default: runs/pretrain
    WEBREFINERY_ABLATION   `refinery ablate --output DIR` folder, or its     default: runs/ablation
                           ablation.json (optional: notebooks say so when it is absent)
    WEBREFINERY_DATA       the shared data folder (GPT-2 tokenizer, ...)     default: ../shared/data
    WEBREFINERY_FIGURES    when set, every figure is also saved there as PNG default: unset
    WEBREFINERY_MAX_ROWS   rows read per table (documents/, rejected/)       default: 200000

A relative path is looked up from the current directory first, then from the repository root (a notebook
runs with its own folder as the current directory, so ``out`` means the repository's ``out/``).
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]

DEFAULTS: Dict[str, Optional[str]] = {
    "WEBREFINERY_RUN": "out",
    "WEBREFINERY_TOK": "tok",
    "WEBREFINERY_TRAIN_RUN": "runs/pretrain",
    "WEBREFINERY_ABLATION": "runs/ablation",
    "WEBREFINERY_DATA": None,  # pipeline.paths decides: ../shared/data beside the repository
    "WEBREFINERY_FIGURES": None,
    "WEBREFINERY_MAX_ROWS": "200000",
}

NOT_PATHS = {"WEBREFINERY_MAX_ROWS"}

HOW_TO_MAKE = {
    "WEBREFINERY_RUN": "make run   (or: refinery run refinedweb --input ... --output out)",
    "WEBREFINERY_TOK": "refinery train-tokenizer --input out/documents --output tok",
    "WEBREFINERY_TRAIN_RUN": "refinery pretrain --tokens tokens --out runs/pretrain --preset tiny",
    "WEBREFINERY_ABLATION": "refinery ablate --input ... --output runs/ablation",
}


def setting(name: str) -> Optional[str]:
    """The value of a WEBREFINERY_* variable, or its default (None when it has none)."""
    value = os.environ.get(name)
    return value if value not in (None, "") else DEFAULTS.get(name)


def resolve(value: str) -> Path:
    """A path from a setting: absolute as is; relative from the current directory, else from the repository."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    here = Path.cwd() / path
    return here.resolve() if here.exists() else (REPO / path).resolve()


def input_path(name: str) -> Path:
    """The resolved path a WEBREFINERY_* variable points at (it may not exist)."""
    value = setting(name)
    if value is None:
        raise KeyError(f"{name} has no default: set it")
    return resolve(value)


def missing(name: str, path: Path, what: str) -> FileNotFoundError:
    """The error a notebook raises when a required input is absent: says what, where, and how to make it."""
    hint = HOW_TO_MAKE.get(name, "")
    return FileNotFoundError(
        f"{what} not found at {path}. Point {name} at it (export {name}=/path/to/it before starting Jupyter)"
        + (f", or create it with: {hint}" if hint else "")
    )


def run_dir() -> Path:
    """The refined run folder (WEBREFINERY_RUN): must hold report.json."""
    path = input_path("WEBREFINERY_RUN")
    if not (path / "report.json").exists():
        raise missing("WEBREFINERY_RUN", path, "a refined run (report.json, documents/, rejected/)")
    return path


def tokenizer_file() -> Path:
    """tokenizer.json from WEBREFINERY_TOK (a train-tokenizer folder or the file itself)."""
    path = input_path("WEBREFINERY_TOK")
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise missing("WEBREFINERY_TOK", path, "a trained tokenizer (tokenizer.json)")
    return path


def train_run_dir() -> Path:
    """The training run folder (WEBREFINERY_TRAIN_RUN): must hold log.jsonl."""
    path = input_path("WEBREFINERY_TRAIN_RUN")
    if not (path / "log.jsonl").exists():
        raise missing("WEBREFINERY_TRAIN_RUN", path, "a training run (log.jsonl, checkpoints/)")
    return path


def ablation_file() -> Optional[Path]:
    """ablation.json from WEBREFINERY_ABLATION (a folder or the file), or None when there is none."""
    path = input_path("WEBREFINERY_ABLATION")
    if path.is_dir():
        path = path / "ablation.json"
    return path if path.is_file() else None


def data_dir() -> Path:
    """The shared data folder (WEBREFINERY_DATA, default ../shared/data beside the repository)."""
    from pipeline.paths import shared_data_dir

    return shared_data_dir()


def max_rows() -> int:
    return int(setting("WEBREFINERY_MAX_ROWS") or 200_000)


def describe_inputs(names: Sequence[str]) -> None:
    """Print each variable, its value (or default) and the path it resolves to."""
    for name in names:
        source = "set" if os.environ.get(name) else "default"
        value = setting(name)
        if name == "WEBREFINERY_DATA":
            shown = data_dir()
        elif name in NOT_PATHS:
            shown = value
        else:
            shown = resolve(value) if value else "(unset)"
        print(f"{name:<22} {source:<8} -> {shown}")


def has_module(name: str) -> bool:
    """Whether ``import name`` would work (optional packages: polars, duckdb, datasets, torch)."""
    return importlib.util.find_spec(name) is not None


def load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """Rows of a JSON-lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def shard_files(folder: Path) -> List[str]:
    """The complete ``.arrow`` shards of a folder, sorted (what ``data_files=`` of ``datasets.load_dataset("arrow",
    ...)`` wants; unfinished ``.tmp`` files are left out)."""
    from pipeline.io.shards import list_shards

    return list_shards(str(folder))


def read_shards(folder: Path, columns: Optional[Sequence[str]] = None, limit: Optional[int] = None):
    """The Arrow shards of a folder as one pyarrow Table: at most ``limit`` rows (default WEBREFINERY_MAX_ROWS),
    only ``columns`` when given (columns that do not exist are left out). Unfinished ``.tmp`` files are ignored."""
    import pyarrow.dataset as ds

    from pipeline.io.shards import list_shards

    dataset = ds.dataset(list_shards(str(folder)), format="ipc")
    if columns is not None:
        columns = [c for c in columns if c in dataset.schema.names]
    return dataset.head(limit or max_rows(), columns=columns)


def save_figure(fig, name: str) -> Optional[Path]:
    """Save ``fig`` as NAME.png under WEBREFINERY_FIGURES when that is set; return the path (else None)."""
    folder = setting("WEBREFINERY_FIGURES")
    if not folder:
        return None
    out = resolve(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path


def html_table(rows: Iterable[Dict[str, Any]], columns: Optional[Sequence[str]] = None, max_chars: int = 300):
    """An IPython HTML table of ``rows`` (dicts); every cell is HTML-escaped and cut to ``max_chars``."""
    from IPython.display import HTML

    rows = list(rows)
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            text = f"{value:,.4g}"
        elif isinstance(value, int) and not isinstance(value, bool):
            text = f"{value:,}"
        else:
            text = "" if value is None else str(value)
        if len(text) > max_chars:
            text = text[: max_chars - 3] + "..."
        return html.escape(text).replace("\n", "<br>")

    head = "".join(f"<th style='text-align:left'>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left;vertical-align:top'>{cell(r.get(c))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return HTML(f"<table><tr>{head}</tr>{body}</table>")


def note(text: str):
    """A visible note box (for an optional input that is absent, or a section with nothing to show)."""
    from IPython.display import HTML

    return HTML(
        "<div style='border-left:4px solid #dd6b20;background:#fffaf0;padding:6px 10px;margin:6px 0'>"
        f"{html.escape(text)}</div>"
    )


def registered_domain(url: Optional[str]) -> str:
    """The registered domain of a URL (``news.bbc.co.uk`` -> ``bbc.co.uk``), from tldextract's bundled
    public-suffix snapshot (no network); "?" when there is none."""
    global _EXTRACT
    if not url:
        return "?"
    if _EXTRACT is None:
        import tldextract

        _EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    parts = _EXTRACT(url)
    if hasattr(parts, "top_domain_under_public_suffix"):  # tldextract >= 5.3
        domain = parts.top_domain_under_public_suffix
    else:
        domain = parts.registered_domain
    return domain or parts.domain or "?"


_EXTRACT = None

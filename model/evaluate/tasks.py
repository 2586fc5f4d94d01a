"""Loaders for the zero-shot evaluation sets, formatted the way lm-evaluation-harness formats them.

Each loader reads one local file (never the network) and returns items ready for log-likelihood
scoring:

- ``MultipleChoiceItem(context, choices, gold)``: the model scores ``target_delimiter + choice``
  after ``context`` for every choice (HellaSwag, ARC-Easy, ARC-Challenge, PIQA);
- ``ContinuationItem(context, continuation)``: the model scores one continuation and we ask whether
  greedy decoding would have produced it (LAMBADA, OpenAI version).

Prompt formats follow the harness's task definitions (zero-shot, no description):

- HellaSwag: ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``; endings are
  ``preprocess(ending)``, where ``preprocess`` strips, turns " [title]" into ". ", drops other
  bracketed WikiHow artefacts and collapses double spaces.
- ARC: ``"Question: " + question + "\\nAnswer:"``; choices are ``choices.text``; gold is the index of
  ``answerKey`` in ``choices.label`` (labels are letters or digits, 3 to 5 choices).
- PIQA: ``"Question: " + goal + "\\nAnswer:"``; choices ``[sol1, sol2]``; gold from the labels file.
- LAMBADA: context = the text up to its last space; continuation = ``" " + last word``.

Splits are the ones the harness reports: HellaSwag and PIQA validation (their test labels are not
public), ARC-Easy and ARC-Challenge **test** (2,376 / 1,172 questions; the validation files, 570 / 299,
stay available as ``split="validation"``), LAMBADA (OpenAI) test. ``TaskSpec.splits`` lists what each
task has; every result names the split it was scored on.

Where the files live: ``resolve_data_dir`` takes an explicit folder, else the environment variable
``WEBREFINERY_EVAL_DIR``, else ``../shared/data/eval`` beside the repository. A user who is online
may instead pass an ``http(s)://`` base URL as the data dir; files are then downloaded into a cache
folder, but only when ``allow_download=True`` (the CLI's ``--download``), never implicitly.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from model.corridor.files import atomic_path
from model.errors import UserError

REPO = Path(__file__).resolve().parents[2]
EVAL_DIR_ENV = "WEBREFINERY_EVAL_DIR"
DEFAULT_EVAL_DIR = REPO.parent / "shared" / "data" / "eval"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "webrefinery" / "eval"


@dataclass(frozen=True)
class MultipleChoiceItem:
    """One multiple-choice question: score ``target_delimiter + choice`` after ``context``."""

    context: str
    choices: list[str]
    gold: int
    target_delimiter: str = " "
    source_id: str | None = None  # the row's own id in the file (ARC ``id``, HellaSwag ``ind``), if any


@dataclass(frozen=True)
class ContinuationItem:
    """One continuation to score (LAMBADA): its log-likelihood and whether greedy decoding finds it."""

    context: str
    continuation: str
    source_id: str | None = None


@dataclass(frozen=True)
class SplitSpec:
    """One split of a task: the files it needs (relative to the data dir), its loader, its size."""

    files: tuple[str, ...]
    loader: Callable[[Path], list]
    expected_count: int | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A task: its kind, its splits, the split scored by default (the harness's), chance and metrics."""

    name: str
    kind: str  # "multiple_choice" | "continuation"
    splits: dict[str, SplitSpec]
    default_split: str
    chance: float | None = None
    metrics: tuple[str, ...] = field(default=())

    def split_for(self, preferred: str | None = None) -> str:
        """``preferred`` when the task has that split, else its default split."""
        return preferred if preferred in self.splits else self.default_split

    # the default split's files, loader and size
    @property
    def files(self) -> tuple[str, ...]:
        return self.splits[self.default_split].files

    @property
    def loader(self) -> Callable[[Path], list]:
        return self.splits[self.default_split].loader

    @property
    def expected_count(self) -> int | None:
        return self.splits[self.default_split].expected_count


class EvalDataError(UserError, ValueError):
    """An evaluation file is missing or malformed (message names the file and the line)."""


# ----------------------------------------------------------------------------- helpers


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise EvalDataError(
            f"evaluation file {path} is missing: pass --data-dir (or set {EVAL_DIR_ENV}) to the "
            "folder that holds the eval sets (default ../shared/data/eval beside the repository)"
        )
    rows = []
    with path.open("r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise EvalDataError(f"{path}:{line_no}: not valid JSON ({exc})") from exc
    return rows


def _require(row: dict, keys: tuple[str, ...], path: Path, index: int) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise EvalDataError(f"{path}: item {index} lacks field(s) {missing}")


# ----------------------------------------------------------------------------- HellaSwag


def preprocess_hellaswag_text(text: str) -> str:
    """The harness's HellaSwag clean-up of WikiHow artefacts (brackets, " [title]")."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    text = text.replace("  ", " ")
    return text


def hellaswag_item_from_row(row: dict) -> MultipleChoiceItem:
    """One HellaSwag row -> its harness-formatted item."""
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return MultipleChoiceItem(
        context=preprocess_hellaswag_text(row["activity_label"] + ": " + ctx),
        choices=[preprocess_hellaswag_text(e) for e in row["endings"]],
        gold=int(row["label"]),
        source_id=None if row.get("ind") is None else str(row["ind"]),
    )


def load_hellaswag(data_dir: Path) -> list[MultipleChoiceItem]:
    """HellaSwag validation (10,042 items, 4 endings each)."""
    path = Path(data_dir) / "hellaswag_validation.jsonl"
    items = []
    for i, row in enumerate(_read_jsonl(path)):
        _require(row, ("ctx_a", "ctx_b", "activity_label", "endings", "label"), path, i)
        item = hellaswag_item_from_row(row)
        if not 0 <= item.gold < len(item.choices):
            raise EvalDataError(f"{path}: item {i} has label {row['label']} outside its endings")
        items.append(item)
    return items


# ----------------------------------------------------------------------------- ARC


def arc_item_from_row(row: dict) -> MultipleChoiceItem:
    """One ARC row -> its harness-formatted item."""
    labels = list(row["choices"]["label"])
    return MultipleChoiceItem(
        context="Question: " + row["question"] + "\nAnswer:",
        choices=list(row["choices"]["text"]),
        gold=labels.index(row["answerKey"]),
        source_id=None if row.get("id") is None else str(row["id"]),
    )


def _load_arc(path: Path) -> list[MultipleChoiceItem]:
    items = []
    for i, row in enumerate(_read_jsonl(path)):
        _require(row, ("question", "choices", "answerKey"), path, i)
        try:
            items.append(arc_item_from_row(row))
        except (KeyError, ValueError) as exc:
            raise EvalDataError(f"{path}: item {i} is malformed ({exc!r})") from exc
    return items


def load_arc_easy(data_dir: Path) -> list[MultipleChoiceItem]:
    """ARC-Easy test (2,376 items), the split the harness reports."""
    return _load_arc(Path(data_dir) / "arc_easy_test.jsonl")


def load_arc_challenge(data_dir: Path) -> list[MultipleChoiceItem]:
    """ARC-Challenge test (1,172 items), the split the harness reports."""
    return _load_arc(Path(data_dir) / "arc_challenge_test.jsonl")


def load_arc_easy_validation(data_dir: Path) -> list[MultipleChoiceItem]:
    """ARC-Easy validation (570 items)."""
    return _load_arc(Path(data_dir) / "arc_easy_validation.jsonl")


def load_arc_challenge_validation(data_dir: Path) -> list[MultipleChoiceItem]:
    """ARC-Challenge validation (299 items)."""
    return _load_arc(Path(data_dir) / "arc_challenge_validation.jsonl")


# ----------------------------------------------------------------------------- PIQA


def load_piqa(data_dir: Path) -> list[MultipleChoiceItem]:
    """PIQA validation (1,838 items, 2 solutions each; labels in a separate .lst file)."""
    path = Path(data_dir) / "piqa_valid.jsonl"
    labels_path = Path(data_dir) / "piqa_valid-labels.lst"
    rows = _read_jsonl(path)
    if not labels_path.exists():
        raise EvalDataError(f"PIQA labels file {labels_path} is missing")
    labels = [line.strip() for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(labels) != len(rows):
        raise EvalDataError(f"{labels_path} has {len(labels)} labels for {len(rows)} PIQA items in {path}")
    items = []
    for i, (row, label) in enumerate(zip(rows, labels)):
        _require(row, ("goal", "sol1", "sol2"), path, i)
        if label not in ("0", "1"):
            raise EvalDataError(f"{labels_path}: line {i + 1} is {label!r}, expected 0 or 1")
        items.append(
            MultipleChoiceItem(
                context="Question: " + row["goal"] + "\nAnswer:",
                choices=[row["sol1"], row["sol2"]],
                gold=int(label),
            )
        )
    return items


# ----------------------------------------------------------------------------- LAMBADA


def lambada_item_from_text(text: str) -> ContinuationItem:
    """Split a LAMBADA passage at its last space: context, and " " + the last word as target."""
    words = text.split(" ")
    return ContinuationItem(context=" ".join(words[:-1]), continuation=" " + words[-1])


def load_lambada(data_dir: Path) -> list[ContinuationItem]:
    """LAMBADA (OpenAI test version, 5,153 passages; the target is the last word)."""
    path = Path(data_dir) / "lambada_openai_test.jsonl"
    items = []
    for i, row in enumerate(_read_jsonl(path)):
        _require(row, ("text",), path, i)
        if " " not in row["text"].strip():
            raise EvalDataError(f"{path}: item {i} has no context before its last word")
        items.append(lambada_item_from_text(row["text"]))
    return items


# ----------------------------------------------------------------------------- registry

TASKS: dict[str, TaskSpec] = {
    "hellaswag": TaskSpec("hellaswag", "multiple_choice",
                          {"validation": SplitSpec(("hellaswag_validation.jsonl",), load_hellaswag, 10042)},
                          "validation", 0.25, ("acc", "acc_norm")),
    "arc_easy": TaskSpec("arc_easy", "multiple_choice",
                         {"test": SplitSpec(("arc_easy_test.jsonl",), load_arc_easy, 2376),
                          "validation": SplitSpec(("arc_easy_validation.jsonl",), load_arc_easy_validation, 570)},
                         "test", None, ("acc", "acc_norm")),
    "arc_challenge": TaskSpec("arc_challenge", "multiple_choice",
                              {"test": SplitSpec(("arc_challenge_test.jsonl",), load_arc_challenge, 1172),
                               "validation": SplitSpec(("arc_challenge_validation.jsonl",),
                                                       load_arc_challenge_validation, 299)},
                              "test", None, ("acc", "acc_norm")),
    "piqa": TaskSpec("piqa", "multiple_choice",
                     {"validation": SplitSpec(("piqa_valid.jsonl", "piqa_valid-labels.lst"), load_piqa, 1838)},
                     "validation", 0.5, ("acc", "acc_norm")),
    "lambada": TaskSpec("lambada", "continuation",
                        {"test": SplitSpec(("lambada_openai_test.jsonl",), load_lambada, 5153)},
                        "test", None, ("acc", "ppl")),
}
SPLITS = ("test", "validation")
# The text used for bits-per-byte when no --text/--tokens is given.
DEFAULT_BPB_TEXT = "wikitext-2-raw-test.txt"
DEFAULT_BPB_SPLIT = "test"  # WikiText-2 raw *test*


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str | Path:
    """The eval data location: explicit argument, else $WEBREFINERY_EVAL_DIR, else $WEBREFINERY_DATA/eval,
    else ../shared/data/eval.

    Returns a Path, or the string unchanged when it is an http(s) URL base (see ``fetch_task_files``).
    """
    if data_dir is None:
        shared = os.environ.get("WEBREFINERY_DATA")  # the project's one data setting, when set
        data_dir = os.environ.get(EVAL_DIR_ENV) or (Path(shared) / "eval" if shared else DEFAULT_EVAL_DIR)
    text = str(data_dir)
    if is_url(text):
        return text
    return Path(text).expanduser()


def is_url(location: str) -> bool:
    """True for an http(s) URL base."""
    return urllib.parse.urlparse(str(location)).scheme in ("http", "https")


def fetch_task_files(base_url: str, names: list[str], cache_dir: Path | None = None,
                     allow_download: bool = False) -> Path:
    """Download the named eval files from ``base_url/<name>`` into a cache folder; returns the folder.

    Files already in the cache are reused. Downloads happen only when ``allow_download`` is true; the
    files must be laid out as in ../shared/data/eval (same names).
    """
    host = urllib.parse.urlparse(base_url).netloc.replace(":", "_") or "remote"
    cache = Path(cache_dir or DEFAULT_CACHE_DIR) / host
    cache.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = cache / name
        if target.exists():
            continue
        if not allow_download:
            raise EvalDataError(
                f"{name} is not in the cache {cache}; the data dir is a URL ({base_url}) and downloading "
                "is off: pass --download (allow_download=True) to fetch it, or point --data-dir at a local folder"
            )
        url = base_url.rstrip("/") + "/" + urllib.parse.quote(name)
        with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=60) as response, \
                open(tmp, "wb") as out:  # noqa: S310
            while chunk := response.read(1 << 20):
                out.write(chunk)
    return cache


def local_task_dir(data_dir, task_names: list[str], allow_download: bool = False,
                   cache_dir: Path | None = None, split: str | None = None) -> Path:
    """A local folder holding the files the given tasks need (fetching from a URL base only if allowed);
    ``split`` as in ``TaskSpec.split_for``."""
    location = resolve_data_dir(data_dir)
    if isinstance(location, Path):
        return location
    names: list[str] = []
    for task in task_names:
        if task in TASKS:
            names.extend(TASKS[task].splits[TASKS[task].split_for(split)].files)
        else:
            names.append(DEFAULT_BPB_TEXT)
    return fetch_task_files(location, names, cache_dir=cache_dir, allow_download=allow_download)


def load_task(name: str, data_dir=None, limit: int | None = None, allow_download: bool = False,
              split: str | None = None) -> list:
    """The items of task ``name`` on ``split`` (default: the task's default split; a split the task does
    not have is an error), the first ``limit`` items when given."""
    if name not in TASKS:
        raise EvalDataError(f"unknown task {name!r}; known: {sorted(TASKS)} and 'bpb'")
    spec = TASKS[name]
    if split is not None and split not in spec.splits:
        raise EvalDataError(f"task {name!r} has no {split!r} split; it has: {', '.join(spec.splits)}")
    split = spec.split_for(split)
    folder = local_task_dir(data_dir, [name], allow_download=allow_download, split=split)
    items = spec.splits[split].loader(folder)
    if limit is not None:
        if limit < 1:
            raise EvalDataError(f"limit must be >= 1, got {limit}")
        items = items[:limit]
    return items

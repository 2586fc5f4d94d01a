"""The quality-layer stages of pipelines.yaml: ``pii``, ``decontaminate``, ``quality_classifier``.

Pure Python (no Beam import here; the corpus-wide ``keep_top`` cut-off lives in
``pipeline/quality/keep_top.py``). Every stage writes its signals on kept and rejected documents.

``pii`` (never rejects, except dead letters): replaces e-mail addresses, public IP addresses, phone
numbers and, when asked, payment-card numbers by placeholders (``pipeline/quality/pii.py`` documents
the patterns); columns ``pii_<kind>`` (int32, matches replaced) for each enabled kind.

``decontaminate``: n-gram overlap with the evaluation sets (``pipeline/quality/decontam.py``).
Columns: ``decontam_ngrams`` (int32, matched n-gram positions, all tasks), ``decontam_task`` (the task
with the most matched n-grams, null when none), ``decontam_<task>`` (int32, per task),
``decontam_removed_chars`` (int32, characters cut; 0 in ``drop`` mode). Rules:

- mode ``drop``: a document with at least ``min_matches`` matched n-grams -> ``decontaminate:<task>``
  (its top task);
- mode ``cut`` (NeMo Curator's rule): every matched n-gram's span plus ``margin_chars`` characters on
  each side is removed (overlapping windows merge) and the pieces left are joined with a blank line;
  more than ``max_splits`` removed windows -> ``decontaminate:too_many_splits``; fewer than
  ``min_chars`` characters left -> ``decontaminate:too_short``.

``quality_classifier``: ``quality_score`` (float32) = probability of ``positive_label`` under the fastText
supervised model at ``model_path`` (``pipeline/quality/classifier.py``: the text with newlines as spaces),
and ``quality_cutoff`` (float32, the cut-off applied). Keep by ``threshold`` (``quality_score >=
threshold``, else ``quality_classifier:low_score``) or, when ``keep_top`` is set, keep the top
``keep_top`` fraction of the documents that reach the stage (a corpus-wide quantile: the stage becomes a
collection stage, see ``keep_top.py``; the others are ``quality_classifier:below_top``).
``extra_models`` (``{column: path}``) adds more score columns with the same label, informational only.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, Optional, Sequence

import pyarrow as pa

from pipeline.document import text_of
from pipeline.quality import decontam as dc
from pipeline.quality import pii as pii_mod
from pipeline.stages.base import DocumentStage, ParamError, check_range, register


def _strings(stage: str, key: str, value, allowed: Sequence[str]) -> None:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ParamError(f"stage '{stage}': '{key}' must be a non-empty list, got {value!r}")
    bad = [v for v in value if v not in allowed]
    if bad:
        raise ParamError(f"stage '{stage}': '{key}' has unknown value(s) {bad}; known: {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise ParamError(f"stage '{stage}': '{key}' lists a value twice: {list(value)}")


# ----------------------------------------------------------------------------- pii


@dataclasses.dataclass
class PiiParams:
    kinds: Sequence[str] = pii_mod.DEFAULT_KINDS
    placeholders: Dict[str, str] = dataclasses.field(default_factory=lambda: dict(pii_mod.DEFAULT_PLACEHOLDERS))

    def validate(self) -> None:
        _strings(PiiStage.name, "kinds", self.kinds, pii_mod.KINDS)
        if not isinstance(self.placeholders, dict):
            raise ParamError(f"stage 'pii': 'placeholders' must be a mapping kind: text, got {self.placeholders!r}")
        for k, v in self.placeholders.items():
            if k not in pii_mod.KINDS or not isinstance(v, str):
                raise ParamError(f"stage 'pii': placeholder {k!r}: {v!r} must be one of {', '.join(pii_mod.KINDS)} "
                                 "mapped to a string")


@register
class PiiStage(DocumentStage):
    name = "pii"
    Params = PiiParams
    columns = {f"pii_{k}": pa.int32() for k in pii_mod.KINDS}

    def output_columns(self):
        return {f"pii_{k}": pa.int32() for k in self.params.kinds}

    def setup(self) -> None:
        self.params.validate()
        self._kinds = tuple(self.params.kinds)
        self._placeholders = {**pii_mod.DEFAULT_PLACEHOLDERS, **self.params.placeholders}

    def process(self, doc) -> Optional[str]:
        if not hasattr(self, "_kinds"):
            self.setup()
        text, counts, _ = pii_mod.redact(text_of(doc), self._kinds, self._placeholders)
        if doc.get("text") is not None:
            doc["text"] = text
        for k in self._kinds:
            doc[f"pii_{k}"] = counts[k]
        return None


# ----------------------------------------------------------------------------- decontaminate

_COLUMN_OK = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass
class DecontaminateParams:
    tasks: Sequence[str] = dc.DEFAULT_TASKS
    ngram: int = 13
    mode: str = "drop"
    min_matches: int = 1
    margin_chars: int = 200
    max_splits: int = 10
    min_chars: int = 200
    data_dir: Optional[str] = None   # default: the folder `refinery eval` reads
    cache_dir: Optional[str] = None  # default: $XDG_CACHE_HOME/webrefinery/decontam

    def validate(self) -> None:
        s = DecontaminateStage.name
        _strings(s, "tasks", self.tasks, tuple(dc.TASK_SPLITS))
        check_range(s, "ngram", self.ngram, 3, 64)
        if self.mode not in ("drop", "cut"):
            raise ParamError(f"stage '{s}': 'mode' = {self.mode!r} must be 'drop' or 'cut'")
        check_range(s, "min_matches", self.min_matches, 1, 10**9)
        check_range(s, "margin_chars", self.margin_chars, 0, 10**7)
        check_range(s, "max_splits", self.max_splits, 0, 10**6)
        check_range(s, "min_chars", self.min_chars, 0, 10**9)


@register
class DecontaminateStage(DocumentStage):
    name = "decontaminate"
    Params = DecontaminateParams
    columns = {"decontam_ngrams": pa.int32(), "decontam_task": pa.string(), "decontam_removed_chars": pa.int32()}

    def output_columns(self):
        return {**self.columns, **{f"decontam_{t}": pa.int32() for t in self.params.tasks}}

    def setup(self) -> None:
        self.params.validate()
        p = self.params
        self._index = dc.load_index(tuple(p.tasks), p.ngram, p.data_dir, p.cache_dir)
        self._hasher = dc.WordHasher()

    def __getstate__(self):  # the index is memory-mapped in setup(), never pickled with the stage
        state = dict(self.__dict__)
        state.pop("_index", None)
        state.pop("_hasher", None)
        return state

    def process(self, doc) -> Optional[str]:
        if getattr(self, "_index", None) is None:
            self.setup()
        p = self.params
        text = text_of(doc)
        cut = p.mode == "cut"
        found = dc.find_contamination(text, self._index, self._hasher, want_spans=cut)
        total = found.total
        doc["decontam_ngrams"] = total
        doc["decontam_task"] = found.top_task(list(self._index.tasks))
        for t in p.tasks:
            doc[f"decontam_{t}"] = found.ngrams.get(t, 0)
        doc["decontam_removed_chars"] = 0
        if total < p.min_matches:
            return None
        if not cut:
            return doc["decontam_task"]
        pieces, windows = dc.cut_spans(text, found.spans, p.margin_chars)
        new_text = "\n\n".join(pieces)
        doc["decontam_removed_chars"] = len(text) - len(new_text)
        doc["text"] = new_text
        if windows > p.max_splits:
            return "too_many_splits"
        if len(new_text) < p.min_chars:
            return "too_short"
        return None


# ----------------------------------------------------------------------------- quality_classifier


@dataclasses.dataclass
class QualityClassifierParams:
    model_path: str = "models/quality/model.bin"
    positive_label: str = "__label__hq"   # DCLM's label for its positives
    threshold: float = 0.5
    keep_top: Optional[float] = None      # a fraction in (0, 1]; replaces ``threshold``
    extra_models: Dict[str, str] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        s = QualityClassifierStage.name
        if not isinstance(self.model_path, str) or not self.model_path:
            raise ParamError(f"stage '{s}': 'model_path' must be a file path, got {self.model_path!r}")
        if not isinstance(self.positive_label, str) or not self.positive_label:
            raise ParamError(f"stage '{s}': 'positive_label' must be a label such as __label__hq")
        check_range(s, "threshold", self.threshold, 0.0, 1.0)
        if self.keep_top is not None:
            if isinstance(self.keep_top, bool) or not isinstance(self.keep_top, (int, float)) or not 0 < self.keep_top <= 1:
                raise ParamError(f"stage '{s}': 'keep_top' = {self.keep_top!r} must be a fraction in (0, 1]")
        if not isinstance(self.extra_models, dict):
            raise ParamError(f"stage '{s}': 'extra_models' must be a mapping column: model path")
        for col, path in self.extra_models.items():
            if not isinstance(col, str) or not _COLUMN_OK.match(col) or col in ("quality_score", "quality_cutoff"):
                raise ParamError(f"stage '{s}': extra model column {col!r} must be a new lower-case column name")
            if not isinstance(path, str) or not path:
                raise ParamError(f"stage '{s}': extra model {col!r} needs a file path, got {path!r}")


class QualityScorer:
    """Loads the models (once per process) and scores one document's text (used by both variants)."""

    def __init__(self, params: QualityClassifierParams):
        from pipeline.quality import classifier as clf

        self.params = params
        self.label = params.positive_label
        self.model = clf.load_model(params.model_path)
        self.extra = {col: clf.load_model(path) for col, path in params.extra_models.items()}
        for path, model in [(params.model_path, self.model), *zip(params.extra_models.values(), self.extra.values())]:
            labels = clf.model_labels(model)
            if self.label not in labels:
                raise clf.QualityModelError(f"quality-classifier model {path!r} has labels {labels}, not the "
                                            f"configured positive_label {self.label!r}")

    def score_into(self, doc) -> float:
        import numpy as np

        from pipeline.quality.classifier import score

        text = text_of(doc)
        s = float(np.float32(score(self.model, text, self.label)))
        doc["quality_score"] = s
        for col, model in self.extra.items():
            doc[col] = float(np.float32(score(model, text, self.label)))
        return s


@register
class QualityClassifierStage(DocumentStage):
    name = "quality_classifier"
    Params = QualityClassifierParams
    columns = {"quality_score": pa.float32(), "quality_cutoff": pa.float32()}

    def __new__(cls, params=None):
        if cls is QualityClassifierStage and params is not None and getattr(params, "keep_top", None) is not None:
            from pipeline.quality.keep_top import QualityKeepTopStage

            stage = object.__new__(QualityKeepTopStage)
            stage.__init__(params)
            return stage
        return super().__new__(cls)

    def output_columns(self):
        return {**self.columns, **{col: pa.float32() for col in self.params.extra_models}}

    def setup(self) -> None:
        self.params.validate()
        self._scorer = QualityScorer(self.params)

    def __getstate__(self):  # models are loaded in setup(), never pickled
        state = dict(self.__dict__)
        state.pop("_scorer", None)
        return state

    def process(self, doc) -> Optional[str]:
        if getattr(self, "_scorer", None) is None:
            self.setup()
        s = self._scorer.score_into(doc)
        doc["quality_cutoff"] = float(self.params.threshold)
        return "low_score" if s < self.params.threshold else None

"""The quality-layer stages of pipelines.yaml: ``pii``, ``decontaminate``, ``quality_classifier``.

Pure Python (no Beam import here; the corpus-wide ``keep_top`` cut-off lives in
``pipeline/quality/keep_top.py``). Every stage writes its signals on kept and rejected documents.

``pii`` (never rejects, except dead letters): replaces e-mail addresses, public IP addresses, phone
numbers and, when asked, payment-card numbers by placeholders (``pipeline/quality/pii.py`` documents
the patterns); columns ``pii_<kind>`` (int32, matches replaced) for each enabled kind.

``decontaminate``: n-gram overlap with the evaluation sets (``pipeline/quality/decontam.py``).
Columns: ``decontam_ngrams`` (int32, matched n-gram positions, all tasks), ``decontam_task`` (the task
with the most matched n-grams, null when none), ``decontam_<task>`` (int32, per task),
``decontam_removed_chars`` (int32, characters cut; 0 in ``drop`` mode), ``decontam_windows`` (int32,
windows cut; 0 in ``drop`` mode). Rules:

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

Parameters are declared (``pipeline/stages/base.py``: ``Param``/``Rule`` tables); ``threshold`` is the
declared rule ``low_score`` on ``quality_score``, and ``max_splits`` the rule ``too_many_splits`` on
``decontam_windows`` (matched windows cut), so the report draws them like every other threshold.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, Optional, Sequence

import pyarrow as pa

from pipeline.document import text_of
from pipeline.quality import decontam as dc
from pipeline.quality import pii as pii_mod
from pipeline.stages.base import DocumentStage, Param, ParamError, Rule, register


def _strings(stage: str, key: str, value, allowed: Sequence[str]) -> None:
    if not value:
        raise ParamError(f"stage '{stage}': '{key}' must be a non-empty list, got {value!r}")
    bad = [v for v in value if v not in allowed]
    if bad:
        raise ParamError(f"stage '{stage}': '{key}' has unknown value(s) {bad}; known: {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise ParamError(f"stage '{stage}': '{key}' lists a value twice: {list(value)}")


def _mapping(stage: str, key: str, value, check) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise ParamError(f"stage '{stage}': '{key}' must be a mapping, got {value!r}")
    for k, v in value.items():
        check(k, v)


# ----------------------------------------------------------------------------- pii


@register
class PiiStage(DocumentStage):
    """Replace PII by placeholders (never rejects); counts per kind as columns."""

    name = "pii"
    parameters = (
        Param("kinds", pii_mod.DEFAULT_KINDS, kind="strings", what="PII kinds (email, ip, phone, card)"),
        Param("placeholders", None, kind="any", type=Optional[Dict[str, str]]),  # None: <EMAIL>, <IP>, ...
    )
    signal_columns = {f"pii_{k}": pa.int32() for k in pii_mod.KINDS}

    @staticmethod
    def validate_params(p) -> None:
        _strings("pii", "kinds", p.kinds, pii_mod.KINDS)

        def check(k, v):
            if k not in pii_mod.KINDS or not isinstance(v, str):
                raise ParamError(f"stage 'pii': placeholder {k!r}: {v!r} must map one of {', '.join(pii_mod.KINDS)} "
                                 "to a string")
        _mapping("pii", "placeholders", p.placeholders, check)

    def output_columns(self):
        return {f"pii_{k}": pa.int32() for k in self.params.kinds}

    def setup(self) -> None:
        self.params.validate()
        self._kinds = tuple(self.params.kinds)
        self._placeholders = {**pii_mod.DEFAULT_PLACEHOLDERS, **(self.params.placeholders or {})}

    def process(self, doc) -> Optional[str]:
        if not hasattr(self, "_kinds"):
            self.setup()
        text, counts, _ = pii_mod.redact(text_of(doc), self._kinds, self._placeholders)
        if doc.get("text") is not None:
            doc["text"] = text
        for k in self._kinds:
            doc[f"pii_{k}"] = counts[k]
        return None


PiiParams = PiiStage.Params


# ----------------------------------------------------------------------------- decontaminate

_COLUMN_OK = re.compile(r"^[a-z][a-z0-9_]*$")


@register
class DecontaminateStage(DocumentStage):
    """Drop, or cut the matches out of, documents that share n-grams with the evaluation sets."""

    name = "decontaminate"
    rules = (Rule("too_many_splits", "decontam_windows", pa.int32(), "<=", Param("max_splits", 10, lo=0, hi=10**6)),)
    parameters = (
        Param("tasks", dc.DEFAULT_TASKS, kind="strings", what="evaluation tasks"),
        Param("ngram", 13, lo=3, hi=64),
        Param("mode", "drop", kind="choice", choices=("drop", "cut")),
        Param("min_matches", 1, lo=1, hi=10**9),
        Param("margin_chars", 200, lo=0, hi=10**7),
        Param("min_chars", 200, lo=0, hi=10**9),
        Param("data_dir", None, kind="any", type=Optional[str]),   # default: the folder `refinery eval` reads
        Param("cache_dir", None, kind="any", type=Optional[str]),  # default: $XDG_CACHE_HOME/webrefinery/decontam
    )
    signal_columns = {"decontam_ngrams": pa.int32(), "decontam_task": pa.string(), "decontam_removed_chars": pa.int32()}

    @staticmethod
    def validate_params(p) -> None:
        _strings("decontaminate", "tasks", p.tasks, tuple(dc.TASK_SPLITS))
        for key in ("data_dir", "cache_dir"):
            if getattr(p, key) is not None and not isinstance(getattr(p, key), str):
                raise ParamError(f"stage 'decontaminate': '{key}' must be a folder path, got {getattr(p, key)!r}")

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
        doc["decontam_windows"] = 0
        if total < p.min_matches:
            return None
        if not cut:
            return doc["decontam_task"]
        pieces, windows = dc.cut_spans(text, found.spans, p.margin_chars)
        new_text = "\n\n".join(pieces)
        doc["decontam_removed_chars"] = len(text) - len(new_text)
        doc["decontam_windows"] = windows
        doc["text"] = new_text
        why = self.check(doc)
        if why:
            return why
        if len(new_text) < p.min_chars:
            return "too_short"
        return None


DecontaminateParams = DecontaminateStage.Params


# ----------------------------------------------------------------------------- quality_classifier


class QualityScorer:
    """Loads the models (once per process) and scores one document's text (used by both variants)."""

    def __init__(self, params):
        from pipeline.quality import classifier as clf

        self.params = params
        self.label = params.positive_label
        extra = params.extra_models or {}
        self.model = clf.load_model(params.model_path)
        self.extra = {col: clf.load_model(path) for col, path in extra.items()}
        for path, model in [(params.model_path, self.model), *zip(extra.values(), self.extra.values())]:
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
    """Score with a fastText classifier; keep by threshold, or the top fraction of the corpus (keep_top)."""

    name = "quality_classifier"
    rules = (Rule("low_score", "quality_score", pa.float32(), ">=", Param("threshold", 0.5, lo=0.0, hi=1.0)),)
    parameters = (
        Param("model_path", "models/quality/model.bin", kind="any", type=str),
        Param("positive_label", "__label__hq", kind="any", type=str),  # DCLM's label for its positives
        Param("keep_top", None, lo=0.0, hi=1.0, optional=True),         # a fraction in (0, 1]; replaces threshold
        Param("extra_models", None, kind="any", type=Optional[Dict[str, str]]),  # {column: model path}
    )
    signal_columns = {"quality_score": pa.float32(), "quality_cutoff": pa.float32()}

    @staticmethod
    def validate_params(p) -> None:
        s = "quality_classifier"
        if not isinstance(p.model_path, str) or not p.model_path:
            raise ParamError(f"stage '{s}': 'model_path' must be a file path, got {p.model_path!r}")
        if not isinstance(p.positive_label, str) or not p.positive_label:
            raise ParamError(f"stage '{s}': 'positive_label' must be a label such as __label__hq")
        if p.keep_top is not None and p.keep_top <= 0:
            raise ParamError(f"stage '{s}': 'keep_top' = {p.keep_top!r} must be a fraction in (0, 1]")

        def check(col, path):
            if not isinstance(col, str) or not _COLUMN_OK.match(col) or col in ("quality_score", "quality_cutoff"):
                raise ParamError(f"stage '{s}': extra model column {col!r} must be a new lower-case column name")
            if not isinstance(path, str) or not path:
                raise ParamError(f"stage '{s}': extra model {col!r} needs a file path, got {path!r}")
        _mapping(s, "extra_models", p.extra_models, check)

    def __new__(cls, params=None):
        if cls is QualityClassifierStage and params is not None and getattr(params, "keep_top", None) is not None:
            from pipeline.quality.keep_top import QualityKeepTopStage

            stage = object.__new__(QualityKeepTopStage)
            stage.__init__(params)
            return stage
        return super().__new__(cls)

    def output_columns(self):
        return {**self.columns, **{col: pa.float32() for col in (self.params.extra_models or {})}}

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
        self._scorer.score_into(doc)
        doc["quality_cutoff"] = float(self.params.threshold)
        return self.check(doc)


QualityClassifierParams = QualityClassifierStage.Params

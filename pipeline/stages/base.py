"""The document-stage contract: a pure-Python function of one Document (no Beam here).

A stage is a small class:

    @register
    class MyStage(DocumentStage):
        name = "my_stage"                      # the name used in pipelines.yaml
        Params = MyParams                      # a dataclass: defaults + ``validate()``
        columns = {"my_signal": pa.float32()}  # metadata columns this stage adds

        def setup(self):                       # load heavy resources once per worker
            ...
        def process(self, doc) -> str | None:  # mutate ``doc``; return None to keep it,
            ...                                # or a rule name ("min_words") to reject it

The Beam wrapper (``pipeline/beam.py``) gives each call a shallow copy of the Document, turns the
returned rule into the reason ``"<stage>:<rule>"``, and turns any exception into the dead-letter
reason ``"<stage>:error:<ExceptionType>"``. Signals a stage computed before rejecting stay on the
rejected Document, so every decision can be audited and re-thresholded.

``run_stages`` applies stages in a plain loop with the same semantics: tests and benchmarks use it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Dict, Iterable, Iterator, List, Optional, Tuple, Type

import pyarrow as pa

from pipeline.document import Document
from pipeline.errors import UserError


class ParamError(UserError, ValueError):
    """A stage parameter is missing, unknown or out of range (message names stage and key)."""


@dataclasses.dataclass
class NoParams:
    def validate(self) -> None:  # pragma: no cover - nothing to check
        pass


def check_range(stage: str, key: str, value: Any, lo: float | None = None, hi: float | None = None) -> None:
    """Raise ParamError unless lo <= value <= hi (bounds optional)."""
    if lo is not None and value < lo or hi is not None and value > hi:
        bounds = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise ParamError(f"stage '{stage}': '{key}' = {value!r} is out of range {bounds}")


class Stage:
    """Common base of document stages and collection stages (dedup)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    columns: ClassVar[Dict[str, pa.DataType]] = {}
    kind: ClassVar[str] = "document"

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def output_columns(self) -> Dict[str, pa.DataType]:
        """Columns this configured stage adds (override when they depend on parameters)."""
        return dict(self.columns)


class DocumentStage(Stage):
    kind: ClassVar[str] = "document"

    def setup(self) -> None:
        """Load heavy resources (models, block lists). Called once per worker before ``process``."""

    def process(self, doc: Document) -> Optional[str]:  # pragma: no cover - abstract
        raise NotImplementedError


class CollectionStage(Stage):
    """A stage that needs the whole collection (dedup). ``expand`` lives in a Beam module:
    ``beam_transform()`` returns a PTransform taking a PCollection of Documents and returning a
    ``(kept, rejected)`` pair, rejected elements being ``(doc, reason)`` tuples."""

    kind: ClassVar[str] = "collection"

    def beam_transform(self):  # pragma: no cover - abstract
        raise NotImplementedError


STAGES: Dict[str, Type[Stage]] = {}


def register(cls: Type[Stage]) -> Type[Stage]:
    """Class decorator: make a stage available to pipelines.yaml under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in STAGES and STAGES[cls.name] is not cls:
        raise ValueError(f"stage name '{cls.name}' registered twice")
    STAGES[cls.name] = cls
    return cls


def reason(stage: str, rule: str) -> str:
    return f"{stage}:{rule}"


def error_reason(stage: str, exc: BaseException) -> str:
    return f"{stage}:error:{type(exc).__name__}"


def apply_stage(stage: DocumentStage, doc: Document) -> Tuple[Document, Optional[str]]:
    """Run one stage on a copy of ``doc``: (document, None) if kept, (document, reason) if not."""
    out = dict(doc)
    try:
        rule = stage.process(out)
    except Exception as exc:  # a dead letter, never a crashed run
        return out, error_reason(stage.name, exc)
    return out, (reason(stage.name, rule) if rule else None)


def run_stages(stages: Iterable[DocumentStage], docs: Iterable[Document]) -> Iterator[Tuple[Document, Optional[str]]]:
    """Plain-loop equivalent of the Beam graph for document stages: yields (doc, reason-or-None)."""
    stages = list(stages)
    for stage in stages:
        stage.setup()
    for doc in docs:
        why = None
        for stage in stages:
            doc, why = apply_stage(stage, doc)
            if why:
                break
        yield doc, why

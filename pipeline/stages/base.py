"""The document-stage contract: a pure-Python function of one Document (no Beam here), and the
declarations from which a stage's parameters, columns and rejection checks are derived.

A filter stage declares each rule ONCE, as a ``Rule`` row: the rule name (the rejection reason is
``"<stage>:<rule>"``), the signal column and its Arrow type, the comparison a kept document
satisfies, and the threshold parameter with its default and range (a ``Param``). Everything else
is derived from that table when the class is created (``Stage.__init_subclass__``):

- ``Params``: a dataclass with one field per declared parameter (rule thresholds first, in rule
  order, then the stage's other ``parameters``), whose ``validate()`` checks types and declared
  ranges (``pipeline/config.py`` calls it for pipelines.yaml and ``--set``);
- ``columns``: the Arrow columns the stage adds (``signal_columns`` first, then rule columns);
- ``check(values)``: the first rule (in declared order) the values break, or None; the default
  ``process`` is ``doc.update(self.measure(text)); return self.check(doc)``;
- the HTML report's threshold lines (``pipeline.html_report.threshold_signals``).

A complete filter stage (the README's "Adding a stage" example; ``tests/pipeline/stages/test_stage_rules.py`` runs it)::

    import pyarrow as pa
    from pipeline.stages.base import DocumentStage, Param, Rule, register

    @register
    class MinChars(DocumentStage):
        \"\"\"Reject documents shorter than ``min_chars`` characters.\"\"\"
        name = "min_chars"
        rules = (Rule("too_short", "chars", pa.int32(), ">=", Param("min_chars", 200, lo=0)),)

        def measure(self, text):
            return {"chars": len(text)}

Put the module in ``pipeline/stages/`` (every module there is imported by ``load_all``) and add the
stage to a pipeline in ``pipelines.yaml`` (``- min_chars: {min_chars: 500}``). Defaults that are a
paper's values belong in ``pipelines.yaml`` too; the ``Param`` default is what a bare entry gets.

Declarations:

- ``rules``: ``Rule(name, column, type, keep, param)``. ``keep`` is ``">="``, ``">"``, ``"<="`` or
  ``"<"`` (a document is kept when ``signal KEEP param``, so ``">="`` rejects ``signal < param``),
  or ``"falsy"`` (rejected when the signal is true; ``param`` None). ``param`` is a ``Param`` or the
  name of one in ``parameters``; ``type`` may be None when ``signal_columns`` declares the column.
- ``parameters``: the other ``Param``\\ s (switches, lists, choices, thresholds of rules that a
  custom ``process`` applies). ``Param(name, default, lo=, hi=, kind=, what=, choices=, type=)``:
  ``kind`` is ``"number"`` (default; ``lo``/``hi`` numbers or another parameter's name, as in
  ``max_words >= min_words``), ``"bool"``, ``"strings"`` (a list of non-empty strings, ``what``
  names them in the error), ``"choice"`` (one of ``choices``) or ``"any"`` (give ``type``).
- ``signal_columns``: ``{column: Arrow type}`` of columns no rule thresholds (counts, labels).
- ``validate_params(params)``: optional static method for checks a table cannot say (folders exist).

A stage may keep a hand-written ``Params`` dataclass and ``columns`` dict instead (the dedup and
tokenize collection stages do).

Runtime contract (unchanged):

    class MyStage(DocumentStage):
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
import operator
from typing import Any, Callable, ClassVar, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Type

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


# ---------------------------------------------------------------------------------------------
# declarations

PARAM_KINDS = ("number", "bool", "strings", "choice", "any")


@dataclasses.dataclass(frozen=True)
class Param:
    """One stage parameter: name, default, and what a valid value is (see the module docstring)."""

    name: str
    default: Any
    lo: Any = None  # a number, or the name of another parameter of the stage
    hi: Any = None
    kind: str = "number"
    what: str = "strings"  # kind "strings": what the items are, for the error message
    choices: Tuple[Any, ...] = ()
    type: Any = None  # the dataclass field's annotation (derived from kind/default when None)
    optional: bool = False  # None is also accepted (kind "number")

    def __post_init__(self):
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"Param {self.name!r}: kind {self.kind!r} is not one of {PARAM_KINDS}")

    def annotation(self) -> Any:
        if self.type is not None:
            return self.type
        if self.kind == "bool":
            return bool
        if self.kind == "strings":
            return Sequence[str]
        if self.kind == "number":
            base = int if isinstance(self.default, int) and not isinstance(self.default, bool) else float
            return Optional[base] if self.optional else base
        return Any

    def _bound(self, bound: Any, params: Any) -> Any:
        return getattr(params, bound) if isinstance(bound, str) else bound

    def check(self, stage: str, params: Any) -> None:
        """Raise ParamError (naming ``stage`` and this key) unless ``params``' value is valid."""
        value = getattr(params, self.name)
        name = self.name
        if self.kind == "number":
            if value is None and self.optional:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParamError(f"stage '{stage}': '{name}' must be a number, got {value!r}")
            check_range(stage, name, value, self._bound(self.lo, params), self._bound(self.hi, params))
        elif self.kind == "bool":
            if not isinstance(value, bool):
                raise ParamError(f"stage '{stage}': '{name}' must be true or false, got {value!r}")
        elif self.kind == "strings":
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise ParamError(f"stage '{stage}': '{name}' must be a list of {self.what}, got {value!r}")
        elif self.kind == "choice":
            if value not in self.choices:
                raise ParamError(
                    f"stage '{stage}': '{name}' = {value!r} must be one of {', '.join(map(str, self.choices))}"
                )


# keep -> the comparison that REJECTS (written as the hand-written checks were: ``signal < param``)
_REJECT_OPS: Dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.lt,
    ">": operator.le,
    "<=": operator.gt,
    "<": operator.ge,
}
KEEP_COMPARISONS = (*_REJECT_OPS, "falsy")


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rejection rule: ``name`` rejects a document unless ``column KEEP param`` holds."""

    name: str
    column: str
    type: Optional[pa.DataType]
    keep: str
    param: Any = None  # Param, or the name of a Param in the stage's ``parameters``; None for "falsy"

    def __post_init__(self):
        if self.keep not in KEEP_COMPARISONS:
            raise ValueError(f"Rule {self.name!r}: keep {self.keep!r} is not one of {KEEP_COMPARISONS}")
        if (self.keep == "falsy") != (self.param is None):
            raise ValueError(f"Rule {self.name!r}: a threshold parameter is needed exactly when keep is not 'falsy'")

    @property
    def param_name(self) -> Optional[str]:
        return self.param.name if isinstance(self.param, Param) else self.param

    @property
    def bound(self) -> Optional[str]:
        """"min" when kept documents are at or above the threshold, "max" at or below, None for flags."""
        if self.keep == "falsy":
            return None
        return "min" if self.keep.startswith(">") else "max"

    def breaks(self, value: Any, threshold: Any) -> bool:
        """True when a signal ``value`` is rejected by this rule at ``threshold``."""
        if self.keep == "falsy":
            return bool(value)
        return _REJECT_OPS[self.keep](value, threshold)


def _params_class(stage_cls: type, params: Sequence[Param]) -> type:
    """A dataclass ``<Stage>.Params`` with one field per Param and a ``validate()`` that checks them."""
    stage_name = stage_cls.name
    extra = stage_cls.__dict__.get("validate_params")
    extra = extra.__func__ if isinstance(extra, (staticmethod, classmethod)) else extra

    def validate(self) -> None:
        for p in params:
            p.check(stage_name, self)
        if extra is not None:
            extra(self)

    fields = [
        (p.name, p.annotation(), dataclasses.field(default=p.default)) for p in params
    ]
    cls = dataclasses.make_dataclass(f"{stage_cls.__name__}Params", fields, namespace={"validate": validate})
    cls.__module__ = stage_cls.__module__
    cls.__qualname__ = f"{stage_cls.__qualname__}.Params"  # pickled by reference through the stage class
    cls.__doc__ = f"Parameters of stage '{stage_name}' (declared in {stage_cls.__qualname__}.rules/parameters)."
    cls.declared = tuple(params)
    return cls


class Stage:
    """Common base of document stages and collection stages (dedup)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    columns: ClassVar[Dict[str, pa.DataType]] = {}
    kind: ClassVar[str] = "document"
    # True when the stage's output is much smaller than its input (extraction: text vs HTML): on remote
    # runners the graph spreads documents over workers right after it, where a shuffle is cheapest.
    shrinks_documents: ClassVar[bool] = False
    # declarations (module docstring); empty for stages with a hand-written Params/columns
    rules: ClassVar[Tuple[Rule, ...]] = ()
    parameters: ClassVar[Tuple[Param, ...]] = ()
    signal_columns: ClassVar[Dict[str, pa.DataType]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if not any(k in own for k in ("rules", "parameters", "signal_columns")):
            return
        by_name: Dict[str, Param] = {}
        for p in [r.param for r in cls.rules if isinstance(r.param, Param)] + list(cls.parameters):
            if p.name in by_name:
                raise TypeError(f"{cls.__name__}: parameter {p.name!r} declared twice")
            by_name[p.name] = p
        columns = dict(cls.signal_columns)
        for r in cls.rules:
            if r.param is not None and r.param_name not in by_name:
                raise TypeError(f"{cls.__name__}: rule {r.name!r} names an undeclared parameter {r.param_name!r}")
            if r.column in columns:
                if r.type is not None and columns[r.column] != r.type:
                    raise TypeError(f"{cls.__name__}: column {r.column!r} declared with two types")
            elif r.type is None:
                raise TypeError(f"{cls.__name__}: rule {r.name!r}: column {r.column!r} has no Arrow type")
            else:
                columns[r.column] = r.type
        if "Params" not in own:
            cls.Params = _params_class(cls, list(by_name.values()))
        if "columns" not in own:
            cls.columns = columns
        cls._checks = tuple((r.name, r.column, r.param_name, r) for r in cls.rules)

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def output_columns(self) -> Dict[str, pa.DataType]:
        """Columns this configured stage adds (override when they depend on parameters)."""
        return dict(self.columns)

    def check(self, values: Dict[str, Any], order: Optional[Sequence[str]] = None) -> Optional[str]:
        """The first rule that ``values`` break at this stage's parameters, or None. Rules are checked
        in declared order, or in ``order`` (rule names: a convention that checks in another order)."""
        p = self.params
        checks = self._checks
        if order is not None:
            by_name = {c[0]: c for c in checks}
            checks = [by_name[name] for name in order]
        for rule_name, column, param, rule in checks:
            if rule.breaks(values[column], None if param is None else getattr(p, param)):
                return rule_name
        return None

    _checks: ClassVar[tuple] = ()


class DocumentStage(Stage):
    kind: ClassVar[str] = "document"

    def setup(self) -> None:
        """Load heavy resources (models, block lists). Called once per worker before ``process``."""

    def measure(self, text: str) -> Dict[str, Any]:  # pragma: no cover - abstract
        """The signals of ``text``, keyed by column (stages that keep the default ``process``)."""
        raise NotImplementedError(f"stage '{self.name}' declares rules but neither measure() nor process()")

    def process(self, doc: Document) -> Optional[str]:
        """Default for declared filters: record ``measure(text)`` on the document, reject on the first
        broken rule."""
        signals = self.measure(doc.get("text") or "")
        doc.update(signals)
        return self.check(signals)


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
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # a dead letter, never a crashed run (pyo3's PanicException is a BaseException)
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

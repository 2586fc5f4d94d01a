"""Declared rules (``pipeline.stages.base.Rule``/``Param``): what is derived from one table, the README's example
stage run end to end, and stage discovery that cannot skip a module silently."""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from pathlib import Path

import pyarrow as pa
import pytest

import pipeline.stages as stages_pkg
from pipeline.config import ConfigError, get_pipeline
from pipeline.paths import REPO
from pipeline.document import make_document
from pipeline.html_report import threshold_signals
from pipeline.stages.base import STAGES, DocumentStage, Param, ParamError, Rule, register, run_stages

README = REPO / "README.md"


def readme_example_source() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Adding a stage"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def min_chars_stage():
    """The README's example stage, executed from the README itself, registered for the test only."""
    module = types.ModuleType("readme_example_stage")
    sys.modules[module.__name__] = module
    try:
        exec(compile(readme_example_source(), str(README), "exec"), module.__dict__)
        yield module.MinChars
    finally:
        STAGES.pop("min_chars", None)
        sys.modules.pop(module.__name__, None)


def test_readme_example_is_ten_lines_or_so():
    lines = [line for line in readme_example_source().splitlines() if line.strip()]
    assert len(lines) <= 11


def test_readme_example_stage_runs_and_validates(min_chars_stage, tmp_path):
    cls = min_chars_stage
    assert STAGES["min_chars"] is cls
    assert cls.columns == {"chars": pa.int32()}
    assert [f.name for f in dataclasses.fields(cls.Params)] == ["min_chars"]
    assert cls.Params().min_chars == 200
    docs = [make_document(id="short", text="x" * 199), make_document(id="long", text="y" * 200)]
    out = list(run_stages([cls()], docs))
    assert [(d["id"], d["chars"], why) for d, why in out] == [("short", 199, "min_chars:too_short"), ("long", 200, None)]

    config = tmp_path / "p.yaml"
    config.write_text("pipelines:\n  p:\n    stages:\n      - min_chars: {min_chars: 500}\n", encoding="utf-8")
    spec = get_pipeline("p", config)
    stage = spec.build_stages()[0]
    assert stage.params.min_chars == 500
    assert [why for _, why in run_stages([stage], docs)] == ["min_chars:too_short", "min_chars:too_short"]
    with pytest.raises(ConfigError, match=r"stage 'min_chars'.*'min_chars' = -1 is out of range \[0, inf\]"):
        get_pipeline("p", config, overrides=["min_chars.min_chars=-1"])
    with pytest.raises(ConfigError, match=r"unknown key 'min_char'.*did you mean 'min_chars'"):
        get_pipeline("p", config, overrides=["min_chars.min_char=3"])
    # the report's threshold line comes from the same rule
    manifest = {"stages": [{"name": "min_chars", "params": {"min_chars": 500}}]}
    (t,) = threshold_signals(manifest, ["chars", "text"])
    assert (t.stage, t.param, t.column, t.value, t.bound, t.rule) == ("min_chars", "min_chars", "chars", 500.0, "min", "too_short")


def test_comparisons_reject_exactly_outside_the_kept_side():
    p = Param("t", 0.5, lo=0, hi=1)
    cases = {">=": (0.5, 0.4), ">": (0.6, 0.5), "<=": (0.5, 0.6), "<": (0.4, 0.5)}
    for keep, (kept, rejected) in cases.items():
        rule = Rule("r", "c", pa.float32(), keep, p)
        assert not rule.breaks(kept, 0.5) and rule.breaks(rejected, 0.5), keep
    flag = Rule("f", "c", pa.bool_(), "falsy")
    assert flag.breaks(True, None) and not flag.breaks(False, None)
    assert not Rule("r", "c", pa.float32(), ">=", p).breaks(float("nan"), 0.5)  # as the hand-written checks were


def test_declared_ranges_and_kinds_are_validated():
    class Declared(DocumentStage):
        name = "declared_test_stage"
        rules = (
            Rule("low", "x", pa.float32(), ">=", Param("min_x", 1.0, lo=0)),
            Rule("high", "x", None, "<=", Param("max_x", 5.0, lo="min_x", hi=10)),
        )
        parameters = (
            Param("flag", True, kind="bool"),
            Param("words", ("a",), kind="strings", what="words"),
            Param("mode", "a", kind="choice", choices=("a", "b")),
        )

    P = Declared.Params
    P().validate()
    assert Declared.columns == {"x": pa.float32()}
    for bad, message in [
        (dict(min_x=-1), r"stage 'declared_test_stage': 'min_x' = -1 is out of range \[0, inf\]"),
        (dict(min_x=6.0), r"'max_x' = 5.0 is out of range \[6.0, 10\]"),
        (dict(min_x="1"), r"'min_x' must be a number"),
        (dict(flag="yes"), r"'flag' must be true or false"),
        (dict(words="abc"), r"'words' must be a list of words"),
        (dict(mode="c"), r"'mode' = 'c' must be one of a, b"),
    ]:
        with pytest.raises(ParamError, match=message):
            P(**bad).validate()
    stage = Declared(P(min_x=1.0, max_x=5.0))
    assert stage.check({"x": 0.5}) == "low" and stage.check({"x": 6}) == "high" and stage.check({"x": 3}) is None


def test_bad_declarations_fail_at_class_creation():
    with pytest.raises(TypeError, match="no Arrow type"):
        type("Bad", (DocumentStage,), {"name": "bad", "rules": (Rule("r", "c", None, ">=", Param("p", 1)),)})
    with pytest.raises(TypeError, match="undeclared parameter"):
        type("Bad", (DocumentStage,), {"name": "bad", "rules": (Rule("r", "c", pa.int32(), ">=", "nope"),)})
    with pytest.raises(TypeError, match="declared twice"):
        type("Bad", (DocumentStage,), {"name": "bad", "parameters": (Param("p", 1), Param("p", 2))})
    with pytest.raises(ValueError, match="keep"):
        Rule("r", "c", pa.int32(), "==", Param("p", 1))


def test_every_threshold_of_the_shipped_filters_is_declared():
    registry = stages_pkg.load_all()
    declared = {name: {r.name for r in cls.rules} for name, cls in registry.items()}
    assert {"min_words", "max_words", "stop_words", "alpha_words"} <= declared["gopher_quality"]
    assert len(declared["gopher_repetition"]) == 13
    assert declared["fineweb_filters"] == {"line_punct_ratio", "dup_line_char_frac", "short_line_ratio"}
    assert declared["c4_filters"] == {"lorem_ipsum", "curly_bracket", "too_few_sentences"}
    assert declared["langid"] == {"low_score"} and declared["line_corrections"] == {"too_many_removed"}
    for name, cls in registry.items():
        for rule in cls.rules:  # every rule's column is an output column and its parameter a Params field
            assert rule.column in cls.columns, (name, rule.name)
            if rule.param_name:
                assert rule.param_name in {f.name for f in dataclasses.fields(cls.Params)}, (name, rule.name)


def test_discovery_finds_every_stage_module_and_fails_loudly(tmp_path, monkeypatch):
    names = stages_pkg.stage_modules()
    on_disk = sorted(p.stem for p in Path(stages_pkg.__file__).parent.glob("*.py") if p.stem != "__init__")
    assert [n for n in names if n.startswith("pipeline.stages.")] == [f"pipeline.stages.{m}" for m in on_disk]
    assert "pipeline.tokenize.stage" in names
    registry = stages_pkg.load_all()
    assert {"extract", "langid", "gopher_quality", "gopher_repetition", "normalize", "tokenize"} <= set(registry)

    monkeypatch.setattr(stages_pkg, "stage_modules", lambda: names + ["pipeline.stages.no_such_stage_module"])
    with pytest.raises(ModuleNotFoundError, match="no_such_stage_module"):
        stages_pkg.load_all()

    module = types.ModuleType("forgot_register")

    class Forgotten(DocumentStage):
        name = "forgotten"

    Forgotten.__module__ = module.__name__
    module.Forgotten = Forgotten
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(stages_pkg, "stage_modules", lambda: [module.__name__])
    with pytest.raises(TypeError, match="Forgotten.*not @register-ed"):
        stages_pkg.load_all()


class _Panic(BaseException):
    """Stands for pyo3's PanicException (a BaseException): a compiled library failing on one page."""


class _PanickingStage(DocumentStage):
    name = "panicking"

    def __init__(self, exc):
        self.exc = exc

    def process(self, doc):
        if "boom" in doc["text"]:
            raise self.exc
        return None


def test_a_base_exception_from_one_document_is_a_dead_letter_not_a_crashed_run():
    docs = [make_document("a", "fine text"), make_document("b", "boom"), make_document("c", "more fine text")]
    got = [(d["id"], why) for d, why in run_stages([_PanickingStage(_Panic("rust panic"))], docs)]
    assert got == [("a", None), ("b", "panicking:error:_Panic"), ("c", None)]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
def test_interrupts_and_exit_still_stop_the_run(exc):
    with pytest.raises(type(exc)):
        list(run_stages([_PanickingStage(exc)], [make_document("b", "boom")]))

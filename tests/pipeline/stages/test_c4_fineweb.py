"""C4 and FineWeb filter stages: each rule and threshold on both sides."""

from __future__ import annotations

import gzip
import itertools
import json

import pytest

from pipeline.document import make_document
from pipeline.stages.base import ParamError, apply_stage, run_stages
from pipeline.stages.c4_filters import C4Filters, C4FiltersParams, count_sentences
from pipeline.stages.fineweb_filters import FineWebFilters, FineWebFiltersParams

from pipeline.paths import require_shared


def run(stage, text):
    stage.setup()
    return apply_stage(stage, make_document(id="t", text=text))


S = "The committee met on Tuesday to discuss the budget."  # one sentence, 9 words


# ---------------------------------------------------------------- C4


def test_count_sentences():
    assert count_sentences(S) == 1
    assert count_sentences('He left. She stayed! Why? "Because."') == 4
    assert count_sentences('He said "yes"') == 1  # no sentence mark found: a kept line is one


def test_c4_min_sentences_boundary():
    # 5 one-sentence lines -> 5 sentences, kept (at least 5); 4 -> too_few_sentences
    doc, why = run(C4Filters(), "\n".join([S] * 5))
    assert doc["c4_sentences"] == 5 and why is None
    doc, why = run(C4Filters(), "\n".join([S] * 4))
    assert doc["c4_sentences"] == 4 and why == "c4_filters:too_few_sentences"
    # sentences are counted inside lines too: 2 lines of 3 sentences = 6
    doc, why = run(C4Filters(), "\n".join([f"{S} {S} {S}"] * 2))
    assert doc["c4_sentences"] == 6 and why is None


def test_c4_line_rules():
    lines = [S] * 5 + [
        "Home page of the committee",  # no terminal punctuation
        "Budget updates are coming soon...",  # ends with an ellipsis
        "Thank you.",  # 2 words < 3
        "Please enable JavaScript to view this page.",  # javascript
        "This site uses cookies to improve your experience.",  # policy
        "Read our Privacy Policy for details.",  # policy
        "x" * 1001 + " is a very long word.",  # a word over 1000 characters
        "The vote passed with a clear majority[1] after the debate[citation needed].",  # citations removed
    ]
    doc, why = run(C4Filters(), "\n".join(lines))
    assert why is None
    assert doc["c4_removed_no_terminal_punct"] == 2
    assert doc["c4_removed_too_few_words"] == 1
    assert doc["c4_removed_javascript"] == 1
    assert doc["c4_removed_policy"] == 2
    assert doc["c4_removed_long_word"] == 1
    assert doc["c4_lines_kept"] == 6
    assert doc["text"] == "\n".join([S] * 5 + ["The vote passed with a clear majority after the debate."])


def test_c4_min_words_per_line_boundary():
    # "Votes were counted." has 3 words: kept; "Votes counted." has 2: removed
    doc, _ = run(C4Filters(), "\n".join([S] * 5 + ["Votes were counted.", "Votes counted."]))
    assert doc["c4_removed_too_few_words"] == 1
    assert doc["text"].endswith("Votes were counted.")


def test_c4_page_rules():
    doc, why = run(C4Filters(), "\n".join([S] * 5 + ["Lorem ipsum dolor sit amet, consectetur."]))
    assert why == "c4_filters:lorem_ipsum" and doc["c4_lorem_ipsum"] is True
    doc, why = run(C4Filters(), "\n".join([S] * 5 + ["The function body is { return x; }."]))
    assert why == "c4_filters:curly_bracket" and doc["c4_curly_bracket"] is True
    # every count is still complete on a rejected page (the bracket line itself is a kept line
    # of one sentence when the page-level rule fires: 5 + 1)
    assert doc["c4_sentences"] == 6 and doc["c4_lines_kept"] == 6
    # a curly bracket in a line already dropped (no terminal punctuation) does not count, as in C4
    doc, why = run(C4Filters(), "\n".join([S] * 5 + ["var x = {a: 1}"]))
    assert why is None and doc["c4_curly_bracket"] is False
    # switches
    doc, why = run(C4Filters(C4FiltersParams(filter_curly_bracket=False)), "\n".join([S] * 5 + ["Set {a, b} now."]))
    assert why is None


def test_c4_params_validate():
    C4FiltersParams().validate()
    with pytest.raises(ParamError, match="min_sentences"):
        C4FiltersParams(min_sentences=-1).validate()
    with pytest.raises(ParamError, match="terminal_punctuation"):
        C4FiltersParams(terminal_punctuation=".!?").validate()


# ---------------------------------------------------------------- FineWeb


def long_line(i: int, end: str = ".") -> str:
    """A distinct line of exactly 40 characters ending with ``end``."""
    body = f"Line number {i:04d} of our sample document"  # 39 characters
    assert len(body) == 39
    return body + end


def test_fineweb_line_punct_ratio_boundary():
    # 25 lines, 3 end with "." -> 3/25 = 0.12 <= 0.12 -> rejected; 4/25 = 0.16 -> kept
    lines = [long_line(i, "x") for i in range(25)]
    drop = [long_line(i) for i in range(3)] + lines[3:]
    doc, why = run(FineWebFilters(), "\n".join(drop))
    assert doc["fineweb_line_punct_ratio"] == pytest.approx(0.12)
    assert why == "fineweb_filters:line_punct_ratio"
    keep = [long_line(i) for i in range(4)] + lines[4:]
    doc, why = run(FineWebFilters(), "\n".join(keep))
    assert doc["fineweb_line_punct_ratio"] == pytest.approx(0.16)
    assert why is None


def test_fineweb_dup_line_char_frac_boundary():
    # 10 lines of 40 chars, the last repeats the first: 40 / 400 = 0.10 >= 0.10 -> rejected
    lines = [long_line(i) for i in range(9)] + [long_line(0)]
    doc, why = run(FineWebFilters(), "\n".join(lines))
    assert doc["fineweb_dup_line_char_frac"] == pytest.approx(0.10)
    assert why == "fineweb_filters:dup_line_char_frac"
    # 11 lines, one duplicate: 40 / 440 = 0.0909 -> kept
    lines = [long_line(i) for i in range(10)] + [long_line(0)]
    doc, why = run(FineWebFilters(), "\n".join(lines))
    assert doc["fineweb_dup_line_char_frac"] == pytest.approx(40 / 440)
    assert why is None


def test_fineweb_short_line_ratio_boundary():
    # 100 lines; a line of exactly 30 characters is short. 67 short -> 0.67 >= 0.67 rejected;
    # 66 short -> 0.66 kept. Short lines end with "." so the punctuation ratio stays high.
    def short(i):
        return f"A short line, number {i:04d}, ok."  # exactly 30 characters

    assert len(short(1)) == 30
    drop = [short(i) for i in range(67)] + [long_line(i) for i in range(33)]
    doc, why = run(FineWebFilters(), "\n".join(drop))
    assert doc["fineweb_short_line_ratio"] == pytest.approx(0.67)
    assert why == "fineweb_filters:short_line_ratio"
    keep = [short(i) for i in range(66)] + [long_line(i) for i in range(34)]
    doc, why = run(FineWebFilters(), "\n".join(keep))
    assert doc["fineweb_short_line_ratio"] == pytest.approx(0.66)
    assert why is None


def test_fineweb_blank_lines_do_not_count():
    # 5 paragraphs separated by blank lines: 5 lines, all punctuated and long
    doc, why = run(FineWebFilters(), "\n\n".join(long_line(i) for i in range(5)))
    assert doc["fineweb_line_punct_ratio"] == 1.0 and doc["fineweb_short_line_ratio"] == 0.0
    assert why is None


def test_fineweb_params_validate():
    FineWebFiltersParams().validate()
    with pytest.raises(ParamError, match="max_short_line_ratio"):
        FineWebFiltersParams(max_short_line_ratio=1.2).validate()


def test_real_documents():
    path = require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        docs = [make_document(id=str(i), text=json.loads(line)["text"]) for i, line in enumerate(itertools.islice(f, 150))]
    for stage in (C4Filters(), FineWebFilters()):
        results = list(run_stages([stage], docs))
        assert any(why is None for _, why in results)
        assert any(why for _, why in results)
        assert all(why is None or why.startswith(stage.name + ":") for _, why in results)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=400))
def test_never_raise_on_arbitrary_text(text):
    for stage in (C4Filters(), FineWebFilters()):
        doc, why = run(stage, text)
        assert why is None or ":error:" not in why
        assert all(doc[c] is not None for c in stage.columns)

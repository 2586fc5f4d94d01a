"""Line-wise corrections: each rule on its own, the 5% removal boundary, switches, columns."""

from __future__ import annotations

import gzip
import itertools
import json

import pytest

from pipeline.document import make_document
from pipeline.stages.base import ParamError, apply_stage, run_stages
from pipeline.stages.line_corrections import (
    RULES,
    LineCorrections,
    LineCorrectionsParams,
    is_counter_line,
    is_mostly_uppercase,
    is_numeric_line,
    is_single_word_line,
    strip_call_to_action,
    uppercase_letter_fraction,
)

from pipeline.paths import require_shared

# A clean 20-word line (no rule applies to it).
CLEAN = "The river flows slowly past the old mill where children once played every summer afternoon until the golden sun set."


def run(text, **params):
    stage = LineCorrections(LineCorrectionsParams(**params))
    stage.setup()
    return apply_stage(stage, make_document(id="t", text=text))


def clean_lines(n):
    return [CLEAN] * n


# ---------------------------------------------------------------- single rules


@pytest.mark.parametrize(
    "line,expected",
    [
        ("3 likes", True),
        ("1.2K shares", True),
        ("15 comments", True),
        ("Likes: 3", True),
        ("12 Comments 4 Shares", True),
        ("• 2,345 views •", True),
        ("Comments (3)", True),
        ("She likes 3 comments about her garden.", False),
        ("3 likes and a long sentence", False),
    ],
)
def test_counter_lines(line, expected):
    assert is_counter_line(line) is expected


@pytest.mark.parametrize(
    "line,expected",
    [
        ("2019", True),
        ("12/03/2019 14:05", True),
        ("+1 555 0100", True),
        ("$12.99", True),
        ("-----", False),  # no digit
        ("Page 2 of 10", False),  # has letters
        ("Room 101", False),
    ],
)
def test_numeric_lines(line, expected):
    assert is_numeric_line(line) is expected


def test_uppercase_fraction_boundary():
    # "ABcd": 2 upper of 4 letters = 0.5 -> not more than half
    assert uppercase_letter_fraction("ABcd") == 0.5
    assert not is_mostly_uppercase("ABcd", 0.5)
    # "ABCd": 3/4 = 0.75
    assert is_mostly_uppercase("ABCd", 0.5)
    # digits and punctuation are not letters: "NEWS 2019!" is 4/4 upper
    assert uppercase_letter_fraction("NEWS 2019!") == 1.0
    # non-ASCII letters count: "ÉTÉ été" = 3 upper of 6 letters = 0.5 -> not mostly upper
    assert uppercase_letter_fraction("ÉTÉ été") == 0.5
    assert not is_mostly_uppercase("ÉTÉ été", 0.5)


def test_uppercase_fraction_non_ascii():
    # "ÉTÉ ÉTÉ été x": upper É T É É T É = 6, lower é t é x = 4, letters 10 -> 0.6 > 0.5
    assert uppercase_letter_fraction("ÉTÉ ÉTÉ été x") == pytest.approx(0.6)
    assert is_mostly_uppercase("ÉTÉ ÉTÉ été x", 0.5)
    # Cyrillic: "МОСКВА москва" 6 upper / 12 letters = 0.5 -> not mostly upper
    assert not is_mostly_uppercase("МОСКВА москва", 0.5)
    assert is_mostly_uppercase("МОСКВА москВА", 0.5)  # 8 / 12
    # letters without case (Chinese) are never upper case
    assert not is_mostly_uppercase("北京欢迎你", 0.5)


def test_single_word_lines():
    assert is_single_word_line("Home")
    assert is_single_word_line("Share!")
    assert not is_single_word_line("Two words")
    # a Chinese sentence has no spaces but many words
    assert not is_single_word_line("今天天气很好。")


@pytest.mark.parametrize(
    "line,kept,removed",
    [
        ("Read more »", "", 3),
        ("Read more...", "", 2),
        ("Posted in News | Read more »", "Posted in News", 4),
        ("The plan was approved on Monday. Read more", "The plan was approved on Monday.", 2),
        ("Sign in | Register", "", 4),
        ("0 items in cart", "", 4),
        ("You have 3 items in your cart", "", 7),
        ("Share | Tweet | Pin it", "", 6),
        ("Continue reading →", "", 3),
        # prose is left alone: the fragment is not set apart by a separator or sentence end
        ("Sign in to view your orders.", "Sign in to view your orders.", 0),
        ("Click here to learn more", "Click here to learn more", 0),
        ("Please reply to this email.", "Please reply to this email.", 0),
        ("Email: john@example.com", "Email: john@example.com", 0),
        ("Learn more about our team and our history.", "Learn more about our team and our history.", 0),
    ],
)
def test_call_to_action_fragments(line, kept, removed):
    assert strip_call_to_action(line) == (kept, removed)


# ---------------------------------------------------------------- the stage


def test_each_rule_removes_its_lines_and_counts_words():
    # 10 clean lines of 20 words (200 words) + one line per rule; removed words:
    # counter "3 likes" 2, numeric "12/03/2019" 1, uppercase "BREAKING NEWS TODAY" 3,
    # single word "Menu" 1, call to action "Read more »" 3 -> 10 removed of 210 = 0.0476 <= 0.05
    lines = clean_lines(5) + ["3 likes", "12/03/2019", "BREAKING NEWS TODAY", "Menu", "Read more »"] + clean_lines(5)
    doc, why = run("\n".join(lines))
    assert why is None
    assert doc["lc_removed_counter"] == 2
    assert doc["lc_removed_numeric"] == 1
    assert doc["lc_removed_uppercase"] == 3
    assert doc["lc_removed_single_word"] == 1
    assert doc["lc_removed_call_to_action"] == 3
    assert doc["lc_removed_words"] == 10
    assert doc["lc_removed_fraction"] == pytest.approx(10 / 210)
    assert doc["text"] == "\n".join(clean_lines(10))


def test_removed_fraction_boundary():
    # 5 clean lines = 100 words; + "BREAKING NEWS TODAY AGAIN NOW" (5 words): 5 / 105 = 0.0476 kept
    doc, why = run("\n".join(clean_lines(5) + ["BREAKING NEWS TODAY AGAIN NOW"]))
    assert doc["lc_removed_fraction"] == pytest.approx(5 / 105)
    assert why is None
    # 95 clean words + 5 removed = 100 words: exactly 0.05 -> kept (not > 0.05)
    ninety_five = " ".join(CLEAN.split()[:19])  # 19 words per line x 5 = 95
    doc, why = run("\n".join([ninety_five] * 5 + ["BREAKING NEWS TODAY AGAIN NOW"]))
    assert doc["lc_removed_fraction"] == pytest.approx(0.05)
    assert why is None
    # 6 removed of 101 words = 0.0594 -> rejected, text left as it was, counts recorded
    text = "\n".join([ninety_five] * 5 + ["BREAKING NEWS TODAY AGAIN NOW", "Menu"])
    doc, why = run(text)
    assert doc["lc_removed_fraction"] == pytest.approx(6 / 101)
    assert why == "line_corrections:too_many_removed"
    assert doc["text"] == text
    assert doc["lc_removed_uppercase"] == 5 and doc["lc_removed_single_word"] == 1


def test_rules_can_be_switched_off():
    text = "\n".join(clean_lines(5) + ["Menu"])
    doc, _ = run(text)
    assert doc["text"] == "\n".join(clean_lines(5))
    doc, why = run(text, rules=[r for r in RULES if r != "single_word"])
    assert why is None
    assert doc["text"] == text
    assert doc["lc_removed_single_word"] == 0


def test_blank_lines_collapse_after_removal():
    text = f"{CLEAN}\n\nMenu\n\n{CLEAN}"
    doc, _ = run(text)
    assert doc["text"] == f"{CLEAN}\n\n{CLEAN}"


def test_params_validate():
    LineCorrectionsParams().validate()
    with pytest.raises(ParamError, match="unknown rules"):
        LineCorrectionsParams(rules=["uppercase", "emoji"]).validate()
    with pytest.raises(ParamError, match="max_removed_fraction"):
        LineCorrectionsParams(max_removed_fraction=1.5).validate()


def test_real_documents():
    path = require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        docs = [make_document(id=str(i), text=json.loads(line)["text"]) for i, line in enumerate(itertools.islice(f, 120))]
    stage = LineCorrections()
    results = list(run_stages([stage], docs))
    kept = [d for d, why in results if why is None]
    dropped = [d for d, why in results if why]
    assert kept and dropped
    for d in kept:
        assert d["lc_removed_fraction"] <= 0.05
        # every kept line survives the whole-line rules
        for line in filter(None, d["text"].split("\n")):
            assert not is_counter_line(line) and not is_numeric_line(line) and not is_single_word_line(line)
    assert all(d["lc_removed_fraction"] > 0.05 for d in dropped)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([CLEAN, "Menu", "3 likes", "2019", "READ THIS NOW", "Read more »", "", "  ", "今天天气很好。"]), max_size=30))
def test_removed_words_add_up(lines):
    doc, why = run("\n".join(lines))
    assert why in (None, "line_corrections:too_many_removed")
    per_rule = sum(doc[f"lc_removed_{r}"] for r in RULES)
    assert per_rule == doc["lc_removed_words"]
    if why is None:
        # kept words + removed words = original words
        kept = len(doc["text"].split()) if doc["text"] else 0
        total = sum(len(line.split()) for line in lines)
        assert kept + per_rule == total

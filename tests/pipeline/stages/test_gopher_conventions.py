"""The two readings of the Gopher signals (``convention: paper`` and ``convention: datatrove``), pinned.

For every signal a small hand-made text whose value differs between the conventions, with the value
under each worked out in the comment (see the README section "Gopher signals: two readings"). Then the
English word tokenizer behind the datatrove convention on the cases it exists for, and the choice of
convention through pipelines.yaml / --set.
"""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, get_pipeline
from pipeline.document import make_document
from pipeline.stages.base import apply_stage
from pipeline.stages.en_words import en_words
from pipeline.stages.gopher_quality import GopherQuality
from pipeline.stages.gopher_repetition import GopherRepetition


def signals(stage_cls, text, convention):
    stage = stage_cls(stage_cls.Params(convention=convention))
    stage.setup()
    doc, _ = apply_stage(stage, make_document(id="t", text=text))
    return doc


def both(stage_cls, text, column):
    return signals(stage_cls, text, "paper")[column], signals(stage_cls, text, "datatrove")[column]


# ------------------------------------------------------------------------------------------ quality


def test_word_count_and_mean_length():
    # paper: white-space tokens "Don't", "stop." -> words "Don't" (5), "stop" (4, edge punctuation off)
    # datatrove: tokens Do, n't, stop, . -> words Do (2), n't (3), stop (4); "." is only a symbol
    assert both(GopherQuality, "Don't stop.", "gopher_words") == (2, 3)
    paper, dt = both(GopherQuality, "Don't stop.", "gopher_mean_word_length")
    assert paper == pytest.approx(4.5) and dt == pytest.approx(3.0)


def test_symbol_word_ratio():
    # paper: (# + ...) = 2 symbols / 3 words (a b c); datatrove: max(#: 1, ellipses: 1) / 5 tokens (# a b ... c)
    paper, dt = both(GopherQuality, "# a b ... c", "gopher_symbol_word_ratio")
    assert paper == pytest.approx(2 / 3) and dt == pytest.approx(1 / 5)


def test_bullet_and_ellipsis_lines():
    # paper: non-empty lines "- a", "- b", "c"; datatrove: str.splitlines() keeps the empty line
    paper, dt = both(GopherQuality, "- a\n\n- b\nc", "gopher_bullet_lines_frac")
    assert paper == pytest.approx(2 / 3) and dt == pytest.approx(2 / 4)
    # "▪" starts a bullet line for us, not for datatrove (only "•" and "-")
    paper, dt = both(GopherQuality, "▪ a\nb", "gopher_bullet_lines_frac")
    assert paper == pytest.approx(1 / 2) and dt == 0.0
    paper, dt = both(GopherQuality, "a...\n\nb", "gopher_ellipsis_lines_frac")
    assert paper == pytest.approx(1 / 2) and dt == pytest.approx(1 / 3)


def test_alpha_words_fraction():
    # paper: 3 white-space tokens, all with a letter; datatrove: " Yes , " he said . -> 3 of 7 tokens
    paper, dt = both(GopherQuality, '"Yes," he said.', "gopher_alpha_words_frac")
    assert paper == 1.0 and dt == pytest.approx(3 / 7)


def test_stop_words():
    # paper: occurrences, case-insensitive: The, the, the, and, and = 5
    # datatrove: distinct tokens equal to a stop word: {"the", "and"} = 2 ("The" is not "the")
    assert both(GopherQuality, "The cat and the dog and the bird", "gopher_stop_words") == (5, 2)


# --------------------------------------------------------------------------------------- repetition


def test_duplicate_lines_are_stripped_only_by_the_paper_reading():
    # paper: lines stripped -> "ab", "ab", "cd": 1 of 3 duplicated, 2 chars of 9
    # datatrove: "ab" and " ab" differ -> nothing duplicated
    text = "ab\n ab\ncd"
    paper, dt = both(GopherRepetition, text, "gopher_dup_line_frac")
    assert paper == pytest.approx(1 / 3) and dt == 0.0
    paper, dt = both(GopherRepetition, text, "gopher_dup_line_char_frac")
    assert paper == pytest.approx(2 / 9) and dt == 0.0


def test_paragraphs_split_on_blank_lines_with_spaces_only_in_the_paper_reading():
    # paper: "x\n \nx" is two paragraphs "x", "x" (one duplicated, 1 char of 5)
    # datatrove: splits on "\n\n+" only -> one paragraph
    paper, dt = both(GopherRepetition, "x\n \nx", "gopher_dup_para_frac")
    assert paper == pytest.approx(1 / 2) and dt == 0.0
    paper, dt = both(GopherRepetition, "x\n \nx", "gopher_dup_para_char_frac")
    assert paper == pytest.approx(1 / 5) and dt == 0.0


def test_top_ngram_fraction():
    # no repeated 2-gram: paper 0 (a single occurrence is no repetition); datatrove counts "a b" once:
    # len("a b") = 3 chars / 7 chars of text
    paper, dt = both(GopherRepetition, "a b c d", "gopher_top_2gram_frac")
    assert paper == 0.0 and dt == pytest.approx(3 / 7)
    # "x y" twice: paper 2 x 2 word chars / 4 word chars = 1; datatrove 2 x len("x y") / len(text) = 6/7
    paper, dt = both(GopherRepetition, "x y x y", "gopher_top_2gram_frac")
    assert paper == 1.0 and dt == pytest.approx(6 / 7)


def test_duplicated_ngram_fraction():
    # "a b c d e a b c d e": paper covers every word of both occurrences: 10 / 10 word chars
    # datatrove: only the second "abcde" counts (5 chars), over len(text) = 19
    paper, dt = both(GopherRepetition, "a b c d e a b c d e", "gopher_dup_5gram_frac")
    assert paper == 1.0 and dt == pytest.approx(5 / 19)
    # overlapping repeats: 8 x "a" -> paper: all 8 words covered (8/8); datatrove: "aaaaa" at 0 is new,
    # at 1..3 seen -> only the one at 1 counts (then it jumps past the end): 5 / 15 chars
    paper, dt = both(GopherRepetition, " ".join("a" * 8), "gopher_dup_5gram_frac")
    assert paper == 1.0 and dt == pytest.approx(5 / 15)


def test_datatrove_checks_paragraph_rules_before_line_rules():
    text = "same line\n\nsame line\n\nsame line\n\nother"  # duplicated lines and paragraphs alike
    p = GopherRepetition.Params(convention="datatrove")
    _, why = apply_stage(GopherRepetition(p), make_document(id="t", text=text))
    assert why == "gopher_repetition:dup_para_frac"
    _, why = apply_stage(GopherRepetition(), make_document(id="t", text=text))
    assert why == "gopher_repetition:dup_line_frac"


def test_paper_is_the_default():
    assert GopherQuality.Params().convention == "paper" and GopherRepetition.Params().convention == "paper"


# ------------------------------------------------------------------------------- word tokenization


@pytest.mark.parametrize("text, tokens", [
    ('"Yes," he said.', ['"', "Yes", ",", '"', "he", "said", "."]),
    ("I don't think it's there's", ["I", "do", "n't", "think", "it", "'s", "there", "'s"]),
    ("You're gonna LOVE it cannot", ["You", "'re", "gon", "na", "LOVE", "it", "can", "not"]),
    ("dont Im whore", ["do", "nt", "I", "m", "whore"]),
    ("Mr. Smith met Dr. Jones in the U.S. at 5pm.", ["Mr.", "Smith", "met", "Dr.", "Jones", "in", "the", "U.S.",
                                                     "at", "5", "pm", "."]),
    ("a well-known 16-inch 10-15 e.g. etc.", ["a", "well", "-", "known", "16", "-", "inch", "10", "-", "15", "e.g.",
                                              "etc", "."]),
    ("(see below): done... $100 100% 10km", ["(", "see", "below", "):", "done", "...", "$", "100", "100", "%",
                                               "10", "km"]),
    ("visit www.foo-bar.com/a-b, or http://x.org/p-q.", ["visit", "www.foo-bar.com/a-b", ",", "or",
                                                        "http://x.org/p-q", "."]),
    ("end.Start and/or a/b 1/2 -5 +5 @user", ["end", ".", "Start", "and/or", "a", "/", "b", "1/2", "-5", "+5",
                                            "@user"]),
    ("(D-Minn.), USA. ’90s", ["(", "D", "-", "Minn.", ")", ",", "USA", ".", "’", "90s"]),
])
def test_english_word_tokens(text, tokens):
    assert en_words(text) == tokens


def test_tokens_keep_every_character():
    text = "He said: \"it's 9:30am—isn't it?\" (well-known…) #tag :-) e-mail@x.org C++ ½²"
    assert "".join(en_words(text)) == "".join(text.split())


# --------------------------------------------------------------------------------- configuration


def test_convention_selectable_in_yaml_and_set(tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("pipelines:\n  p:\n    stages:\n      - gopher_repetition: {convention: datatrove}\n"
                      "      - gopher_quality\n", encoding="utf-8")
    rep, qual = get_pipeline("p", config).build_stages()
    assert rep.params.convention == "datatrove" and qual.params.convention == "paper"
    _, qual = get_pipeline("p", config, overrides=["gopher_quality.convention=datatrove"]).build_stages()
    assert qual.params.convention == "datatrove"
    with pytest.raises(ConfigError, match=r"stage 'gopher_quality'.*'convention' = 'gopher' must be one of paper, datatrove"):
        get_pipeline("p", config, overrides=["gopher_quality.convention=gopher"])

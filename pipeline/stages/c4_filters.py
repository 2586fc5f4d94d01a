"""C4's clean-up heuristics (Raffel et al. 2020, §2.2; TFDS ``c4_utils.clean_page``) as one stage.

Line by line (lines = the text split on ``\\n``, each stripped), in this order:

1. drop the line if one of its words is longer than ``max_word_length`` (1000 characters);
2. remove Wikipedia-style citation marks (``[1]``, ``[edit]``, ``[citation needed]``)
   (``remove_citations``);
3. drop the line unless it ends in terminal punctuation (``terminal_punctuation``: ``. ! ? "`` and
   the typographic closing quote ``”``) or if it ends with an ellipsis ``...``;
4. drop the line if it has fewer than ``min_words_per_line`` (3) words;
5. reject the page if a remaining line contains "lorem ipsum" (``c4_filters:lorem_ipsum``);
6. drop the line if it contains "javascript";
7. reject the page if a remaining line contains a curly bracket ``{`` (``c4_filters:curly_bracket``);
8. drop the line if it contains a cookie/terms phrase ("terms of use", "privacy policy",
   "cookie policy", "uses cookies", "use of cookies", "use cookies");

then reject the page if the kept lines hold fewer than ``min_sentences`` (5) sentences
(``c4_filters:too_few_sentences``); otherwise the text becomes the kept lines joined by ``\\n``.
These values are the paper's ("at least 5 sentences", "at least 3 words") as the C4 code and
datatrove use them. Rule switches: ``remove_citations``, ``filter_lorem_ipsum``,
``filter_javascript``, ``filter_curly_bracket``, ``filter_policy``; ``min_sentences`` /
``min_words_per_line`` / ``max_word_length`` = 0 switch those off.

Differences from TFDS, on purpose: sentences are counted with a regular expression (a run of
``. ! ?`` followed by optional closing quotes/brackets and whitespace or the end; every kept line
counts at least one), not NLTK's punkt, so abbreviations ("Dr. Smith") can count as sentence ends;
the "bad words" page filter of C4 is not part of this stage (the URL filter and the blocklist cover
adult content, as in RefinedWeb). The scan does not stop at the first page-level hit, so every
count below is complete on rejected pages too.

Columns (int32 unless said): ``c4_lines_kept``, ``c4_sentences``, ``c4_removed_long_word``,
``c4_removed_no_terminal_punct``, ``c4_removed_too_few_words``, ``c4_removed_javascript``,
``c4_removed_policy`` (lines removed by each rule), ``c4_lorem_ipsum`` and ``c4_curly_bracket``
(bool).
"""

from __future__ import annotations

import re
from typing import Optional

import pyarrow as pa

from pipeline.stages.base import DocumentStage, Param, Rule, register

CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# A match starts only at the first mark of a run: without the look-behind, a long run of marks not
# followed by white space was retried from every position in it (quadratic: 20 s for a 1 MB line of
# 1,000-character "....x" words). The matches found are the same.
_SENTENCE_END_RE = re.compile(r"(?<![.!?])[.!?]+[\"'”’)\]]*(?=\s|$)")


# line rules (lines removed by each are counted in c4_removed_<rule>)
LINE_RULES = ("long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")


def count_sentences(line: str) -> int:
    """Sentences in a line that ends in terminal punctuation (at least 1)."""
    return max(1, len(_SENTENCE_END_RE.findall(line)))


@register
class C4Filters(DocumentStage):
    """C4's line filters (terminal punctuation, short lines, javascript, policy) and page rules."""

    name = "c4_filters"
    parameters = (
        Param("min_sentences", 5, lo=0),
        Param("min_words_per_line", 3, lo=0),
        Param("max_word_length", 1000, lo=0),
        Param("terminal_punctuation", (".", "!", "?", '"', "”"), kind="strings"),
        *[Param(switch, True, kind="bool") for switch in
          ("remove_citations", "filter_lorem_ipsum", "filter_javascript", "filter_curly_bracket", "filter_policy")],
    )
    signal_columns = {
        "c4_lines_kept": pa.int32(),
        "c4_sentences": pa.int32(),
        **{f"c4_removed_{rule}": pa.int32() for rule in LINE_RULES},
        "c4_lorem_ipsum": pa.bool_(),
        "c4_curly_bracket": pa.bool_(),
    }
    # page rules, checked in this order once every line has been scanned
    rules = (
        Rule("lorem_ipsum", "c4_lorem_ipsum", None, "falsy"),
        Rule("curly_bracket", "c4_curly_bracket", None, "falsy"),
        Rule("too_few_sentences", "c4_sentences", None, ">=", "min_sentences"),
    )

    def process(self, doc) -> Optional[str]:
        p = self.params
        ends = tuple(p.terminal_punctuation)
        removed = dict.fromkeys(LINE_RULES, 0)
        lorem = curly = False
        kept = []
        sentences = 0
        for raw in (doc.get("text") or "").split("\n"):
            line = raw.strip()
            if not line:  # blank lines are layout, not removed content
                continue
            words = line.split()
            if p.max_word_length and any(len(w) > p.max_word_length for w in words):
                removed["long_word"] += 1
                continue
            if p.remove_citations and "[" in line:
                line = CITATION_RE.sub("", line)
            if not line.endswith(ends) or line.endswith("..."):
                removed["no_terminal_punct"] += 1
                continue
            if len(words) < p.min_words_per_line:
                removed["too_few_words"] += 1
                continue
            lower = line.lower()
            if p.filter_lorem_ipsum and "lorem ipsum" in lower:
                lorem = True
            if p.filter_javascript and "javascript" in lower:
                removed["javascript"] += 1
                continue
            if p.filter_curly_bracket and "{" in line:
                curly = True
            if p.filter_policy and any(s in lower for s in POLICY_SUBSTRINGS):
                removed["policy"] += 1
                continue
            sentences += count_sentences(line)
            kept.append(line)
        doc["c4_lines_kept"] = len(kept)
        doc["c4_sentences"] = sentences
        for rule, n in removed.items():
            doc[f"c4_removed_{rule}"] = n
        doc["c4_lorem_ipsum"] = lorem
        doc["c4_curly_bracket"] = curly
        why = self.check(doc)
        if why:
            return why
        doc["text"] = "\n".join(kept)
        return None


C4FiltersParams = C4Filters.Params

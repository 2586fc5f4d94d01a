"""The dedup stages of pipelines.yaml: ``minhash_dedup``, ``exact_dedup``, ``url_dedup``, ``substring_dedup``.

Each is a ``CollectionStage``: ``beam_transform()`` returns a PTransform mapping a PCollection of
Documents to ``(kept, rejected)``, rejected elements being ``(doc, "<stage>:<rule>")``. Rules:
``duplicate`` (minhash, exact, url), ``too_short`` (substring), and ``error:<Type>`` dead letters for
a document whose processing raised. Defaults are RefinedWeb's (REFERENCE.md section 1).
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from pipeline.dedup.keys import KEEP_RULES, check_choice
from pipeline.dedup.minhash.stage import MinhashDedupParams, MinhashDedupStage  # noqa: F401 (registered there)
from pipeline.stages.base import CollectionStage, check_range, register

NORMALIZATIONS = ("full", "whitespace", "none")
# dedup stages whose consecutive runs the graph builder hands to one transform (``fused.FusedDedup``)
FUSABLE = ("exact_dedup", "url_dedup", "minhash_dedup")
CANDIDATES = ("winnow", "all")


@dataclasses.dataclass
class ExactDedupParams:
    """Whole-document exact dedup on the hash of the normalized text (see ``exact.text_key``)."""

    normalization: str = "full"      # full (MinHash rule) | whitespace | none
    keep: str = "lowest_key"

    def validate(self) -> None:
        check_choice(ExactDedupStage.name, "normalization", self.normalization, NORMALIZATIONS)
        check_choice(ExactDedupStage.name, "keep", self.keep, KEEP_RULES)


@register
class ExactDedupStage(CollectionStage):
    name = "exact_dedup"
    Params = ExactDedupParams
    columns = {"exact_dedup_group_size": pa.int32()}

    def beam_transform(self):
        from pipeline.dedup.exact import exact_dedup

        return exact_dedup(self.name, self.params)


@dataclasses.dataclass
class UrlDedupParams:
    """One document per URL; RefinedWeb keeps the URL's earliest copy (``earliest_date``)."""

    normalize_url: bool = True       # strip, lower-case scheme and host, drop the #fragment
    keep: str = "earliest_date"

    def validate(self) -> None:
        check_choice(UrlDedupStage.name, "keep", self.keep, KEEP_RULES)


@register
class UrlDedupStage(CollectionStage):
    name = "url_dedup"
    Params = UrlDedupParams
    columns = {"url_dedup_group_size": pa.int32()}

    def beam_transform(self):
        from pipeline.dedup.exact import url_dedup

        return url_dedup(self.name, self.params)


@dataclasses.dataclass
class SubstringDedupParams:
    """Cut spans of >= ``min_tokens`` whitespace tokens that occur earlier in the corpus; drop cut
    documents left with < ``min_chars`` characters (RefinedWeb: 50 tokens, 20 characters)."""

    min_tokens: int = 50
    min_chars: int = 20
    # "winnow": shuffle windows only where a document shares a winnowed anchor with another (same output,
    # a fraction of the shuffle); "all": every window of every document (the reference)
    candidates: str = "winnow"

    def validate(self) -> None:
        check_range(SubstringDedupStage.name, "min_tokens", self.min_tokens, 2, 10_000)
        check_range(SubstringDedupStage.name, "min_chars", self.min_chars, 0, 1_000_000)
        check_choice(SubstringDedupStage.name, "candidates", self.candidates, CANDIDATES)


@register
class SubstringDedupStage(CollectionStage):
    name = "substring_dedup"
    Params = SubstringDedupParams
    columns = {"substring_dedup_removed_tokens": pa.int32()}

    def beam_transform(self):
        from pipeline.dedup.substring import SubstringDedup

        return SubstringDedup(self.name, self.params)


def fusable(stage) -> bool:
    """Whether ``stage`` can be part of a run of dedup stages fused into one transform (``fused.FusedDedup``)."""
    return isinstance(stage, CollectionStage) and stage.name in FUSABLE

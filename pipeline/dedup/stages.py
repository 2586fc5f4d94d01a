"""The dedup stages of pipelines.yaml: ``minhash_dedup``, ``exact_dedup``, ``url_dedup``, ``substring_dedup``.

Each is a ``CollectionStage``: ``beam_transform()`` returns a PTransform mapping a PCollection of
Documents to ``(kept, rejected)``, rejected elements being ``(doc, "<stage>:<rule>")``. Rules:
``duplicate`` (minhash, exact, url), ``too_short`` (substring), and ``error:<Type>`` dead letters for
a document whose processing raised. Defaults are RefinedWeb's (REFERENCE.md section 1).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import pyarrow as pa

from pipeline.dedup.lsh import KEEP_RULES
from pipeline.dedup.minhash import PRESETS, SCHEMES, SHINGLE_HASHES, LshPreset, resolve_preset
from pipeline.stages.base import CollectionStage, ParamError, check_range, register


def _check_choice(stage: str, key: str, value, choices) -> None:
    if value not in choices:
        raise ParamError(f"stage '{stage}': '{key}' = {value!r} must be one of {', '.join(map(str, choices))}")


@dataclasses.dataclass
class MinhashDedupParams:
    """MinHash LSH near-duplicate removal. ``preset`` picks bands x rows (refinedweb 450x20 = 9,000
    hashes, threshold ~0.74; dclm 93x15; fineweb 14x8); ``bands``/``rows`` override it."""

    preset: str = "refinedweb"
    bands: Optional[int] = None
    rows: Optional[int] = None
    ngram: int = 5                   # words per shingle
    seed: int = 1                    # datasketch's default seed
    scheme: str = "affine32"         # datasketch >= 2.0 ("legacy" = datasketch 1.x values)
    shingle_hash: str = "sha1"       # "sha1" = datasketch's sha1_hash32; "fast" = non-datasketch 64-bit mix
    max_rounds: int = 20             # connected-components rounds unrolled in the graph
    on_unconverged: str = "fail"     # or "continue" (partial clusters, fewer duplicates removed)
    verify: bool = False             # check candidate pairs' true Jaccard (Lee et al.); RefinedWeb does not
    verify_threshold: float = 0.8
    keep: str = "lowest_key"         # which document of a cluster stays: lowest_key | earliest_date | longest
    shards: int = 256                # shuffle keys of the packed bucket/edge batches (spread, not results);
                                     # raise for >~100M documents so one shard group stays small

    def validate(self) -> None:
        name = MinhashDedupStage.name
        _check_choice(name, "preset", self.preset, tuple(PRESETS))
        if self.bands is not None:
            check_range(name, "bands", self.bands, 1, 65535)
        if self.rows is not None:
            check_range(name, "rows", self.rows, 1, 1024)
        check_range(name, "ngram", self.ngram, 1, 64)
        check_range(name, "seed", self.seed, 0, 2**32 - 1)
        _check_choice(name, "scheme", self.scheme, SCHEMES)
        _check_choice(name, "shingle_hash", self.shingle_hash, SHINGLE_HASHES)
        check_range(name, "max_rounds", self.max_rounds, 1, 200)
        _check_choice(name, "on_unconverged", self.on_unconverged, ("fail", "continue"))
        check_range(name, "verify_threshold", self.verify_threshold, 0.0, 1.0)
        _check_choice(name, "keep", self.keep, KEEP_RULES)
        check_range(name, "shards", self.shards, 1, 1_000_000)
        if self.lsh().num_perm > 100_000:
            raise ParamError(f"stage '{name}': bands x rows = {self.lsh().num_perm} hashes is more than 100,000")

    def lsh(self) -> LshPreset:
        return resolve_preset(self.preset, self.bands, self.rows)


@register
class MinhashDedupStage(CollectionStage):
    name = "minhash_dedup"
    Params = MinhashDedupParams
    columns = {"minhash_cluster": pa.string(), "minhash_cluster_size": pa.int32()}

    def beam_transform(self):
        from pipeline.dedup.fuzzy import MinhashDedup

        p = self.params
        return MinhashDedup(self.name, p.lsh(), ngram=p.ngram, seed=p.seed, scheme=p.scheme, shingle_hash=p.shingle_hash,
                            max_rounds=p.max_rounds, on_unconverged=p.on_unconverged, verify=p.verify,
                            verify_threshold=p.verify_threshold, keep=p.keep, shards=p.shards)


@dataclasses.dataclass
class ExactDedupParams:
    """Whole-document exact dedup on the hash of the normalized text (see ``exact.text_key``)."""

    normalization: str = "full"      # full (MinHash rule) | whitespace | none
    keep: str = "lowest_key"

    def validate(self) -> None:
        from pipeline.dedup.exact import NORMALIZATIONS

        _check_choice(ExactDedupStage.name, "normalization", self.normalization, NORMALIZATIONS)
        _check_choice(ExactDedupStage.name, "keep", self.keep, KEEP_RULES)


@register
class ExactDedupStage(CollectionStage):
    name = "exact_dedup"
    Params = ExactDedupParams
    columns = {"exact_dedup_group_size": pa.int32()}

    def beam_transform(self):
        from pipeline.dedup.exact import exact_dedup

        return exact_dedup(self.name, self.params.normalization, self.params.keep)


@dataclasses.dataclass
class UrlDedupParams:
    """One document per URL; RefinedWeb keeps the URL's earliest copy (``earliest_date``)."""

    normalize_url: bool = True       # strip, lower-case scheme and host, drop the #fragment
    keep: str = "earliest_date"

    def validate(self) -> None:
        _check_choice(UrlDedupStage.name, "keep", self.keep, KEEP_RULES)


@register
class UrlDedupStage(CollectionStage):
    name = "url_dedup"
    Params = UrlDedupParams
    columns = {"url_dedup_group_size": pa.int32()}

    def beam_transform(self):
        from pipeline.dedup.exact import url_dedup

        return url_dedup(self.name, self.params.normalize_url, self.params.keep)


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
        if self.candidates not in ("winnow", "all"):
            raise ParamError(f"stage '{SubstringDedupStage.name}': 'candidates' = {self.candidates!r} must be "
                             "'winnow' or 'all'")


@register
class SubstringDedupStage(CollectionStage):
    name = "substring_dedup"
    Params = SubstringDedupParams
    columns = {"substring_dedup_removed_tokens": pa.int32()}

    def beam_transform(self):
        from pipeline.dedup.substring import SubstringDedup

        return SubstringDedup(self.name, self.params.min_tokens, self.params.min_chars, self.params.candidates)

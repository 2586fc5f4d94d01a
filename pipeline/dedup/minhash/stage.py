"""The ``minhash_dedup`` stage: its parameters (one object, validated once), LSH presets and the stage.

``MinhashDedupParams`` is built from pipelines.yaml by the config loader, validated there, and handed
as it is to the Beam transform (``transform.MinhashDedup``) and from there to its DoFns: no stage of
the graph re-reads or re-checks single parameters. Defaults are RefinedWeb's (REFERENCE.md section 1).

No Beam and no numba here (the stage registry imports this module when it loads pipelines.yaml).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import pyarrow as pa

from pipeline.dedup.keys import KEEP_RULES, SHARDS, check_choice
from pipeline.stages.base import CollectionStage, ParamError, check_range, register

SCHEMES = ("affine32", "legacy")
SHINGLE_HASHES = ("sha1", "fast")
ON_UNCONVERGED = ("fail", "continue")
MAX_HASHES = 100_000


@dataclasses.dataclass(frozen=True)
class LshPreset:
    """A banding configuration: ``bands * rows`` permutations."""

    bands: int
    rows: int

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    def candidate_probability(self, jaccard: float) -> float:
        """P(two documents with this Jaccard similarity share at least one band) = 1-(1-s^r)^b."""
        return 1.0 - (1.0 - jaccard ** self.rows) ** self.bands

    def threshold(self) -> float:
        """The usual approximate threshold (1/b)^(1/r): where the S-curve is steepest."""
        return (1.0 / self.bands) ** (1.0 / self.rows)


# RefinedWeb: 9,000 hashes, 450 bands x 20 rows; DCLM: 93 x 15; FineWeb (datatrove): 14 x 8.
PRESETS: Dict[str, LshPreset] = {
    "refinedweb": LshPreset(bands=450, rows=20),
    "dclm": LshPreset(bands=93, rows=15),
    "fineweb": LshPreset(bands=14, rows=8),
}


def resolve_preset(preset: Optional[str], bands: Optional[int] = None, rows: Optional[int] = None) -> LshPreset:
    """A preset by name, with ``bands``/``rows`` overriding it when given."""
    if preset is None:
        if bands is None or rows is None:
            raise ValueError("without a preset, both bands and rows must be given")
        return LshPreset(bands, rows)
    if preset not in PRESETS:
        raise ValueError(f"unknown MinHash preset {preset!r}; expected one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    return LshPreset(bands if bands is not None else base.bands, rows if rows is not None else base.rows)


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
    shards: int = SHARDS             # shuffle keys of the packed bucket/edge batches (spread, not results);
                                     # raise for >~100M documents so one shard group stays small

    def validate(self) -> None:
        name = MinhashDedupStage.name
        check_choice(name, "preset", self.preset, PRESETS)
        if self.bands is not None:
            check_range(name, "bands", self.bands, 1, 65535)
        if self.rows is not None:
            check_range(name, "rows", self.rows, 1, 1024)
        check_range(name, "ngram", self.ngram, 1, 64)
        check_range(name, "seed", self.seed, 0, 2**32 - 1)
        check_choice(name, "scheme", self.scheme, SCHEMES)
        check_choice(name, "shingle_hash", self.shingle_hash, SHINGLE_HASHES)
        check_range(name, "max_rounds", self.max_rounds, 1, 200)
        check_choice(name, "on_unconverged", self.on_unconverged, ON_UNCONVERGED)
        check_range(name, "verify_threshold", self.verify_threshold, 0.0, 1.0)
        check_choice(name, "keep", self.keep, KEEP_RULES)
        check_range(name, "shards", self.shards, 1, 1_000_000)
        if self.lsh().num_perm > MAX_HASHES:
            raise ParamError(f"stage '{name}': bands x rows = {self.lsh().num_perm} hashes is more than 100,000")

    def lsh(self) -> LshPreset:
        return resolve_preset(self.preset, self.bands, self.rows)


@register
class MinhashDedupStage(CollectionStage):
    name = "minhash_dedup"
    Params = MinhashDedupParams
    columns = {"minhash_cluster": pa.string(), "minhash_cluster_size": pa.int32()}

    def beam_transform(self):
        from pipeline.dedup.minhash.transform import MinhashDedup

        return MinhashDedup(self.name, self.params)

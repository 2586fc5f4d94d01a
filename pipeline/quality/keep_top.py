"""``quality_classifier`` with ``keep_top``: keep the top fraction of a whole corpus by quality score.

A collection stage (the cut-off depends on every document): score each document, find the corpus-wide
cut-off with a deterministic Beam combine, then filter. ``QualityClassifierStage(params)`` returns this
class when ``keep_top`` is set; Beam is imported only inside ``beam_transform``.

The cut-off is EXACT: with ``N`` documents scored and ``k = ceil(keep_top * N)``, it is the k-th largest
``quality_score`` (float32), and a document is kept when its score is at or above it. So exactly ``k``
documents are kept, plus any whose score ties the k-th one exactly (ties need identical float32 scores).
It is found with two integer histograms over the 32-bit patterns of the scores (for non-negative
floats the bit pattern orders like the value): the high 16 bits pick the bin holding the k-th score, the
low 16 bits inside that bin pin it. Histograms are sums of integer counts, so the combine is associative
and commutative and the cut-off is the same for any number of workers or bundle split; memory is two
arrays of 65,536 counts. Documents whose scoring raised are dead letters
(``quality_classifier:error:<Type>``) and take no part in the quantile.
"""

from __future__ import annotations

import math
import struct
from typing import Optional, Sequence

import numpy as np

from pipeline.stages.base import CollectionStage, error_reason, reason

BINS = 1 << 16


def score_bits(score: float) -> int:
    """The float32 bit pattern of a score in [0, 1] (orders like the score)."""
    return struct.unpack("<I", struct.pack("<f", score))[0]


def bits_score(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def top_count(n: int, keep_top: float) -> int:
    """How many documents ``keep_top`` keeps out of ``n`` (at least one when n > 0)."""
    return min(n, max(1, math.ceil(keep_top * n - 1e-9))) if n else 0


def select_bin(hist: np.ndarray, k: int) -> Optional[tuple]:
    """(bin holding the k-th largest value, how many values lie above that bin), or None when k == 0."""
    if k <= 0:
        return None
    above = 0
    for b in range(len(hist) - 1, -1, -1):
        c = int(hist[b])
        if above + c >= k:
            return b, above
        above += c
    raise ValueError("k exceeds the histogram's count")


def exact_cutoff(scores: Sequence[float], keep_top: float) -> float:
    """The cut-off of ``keep_top`` over ``scores`` computed the same way without Beam (tests, loops)."""
    bits = np.asarray([score_bits(float(np.float32(s))) for s in scores], dtype=np.uint32)
    k = top_count(len(bits), keep_top)
    if k == 0:
        return math.inf
    return float(np.float32(bits_score(int(np.sort(bits)[len(bits) - k]))))


class QualityKeepTopStage(CollectionStage):
    """``quality_classifier`` in keep_top mode (see the module doc); name, params and columns are the
    document stage's."""

    name = "quality_classifier"

    @property
    def Params(self):  # noqa: N802 - the same Params as the document stage
        from pipeline.quality.stages import QualityClassifierParams

        return QualityClassifierParams

    def output_columns(self):
        import pyarrow as pa

        return {"quality_score": pa.float32(), "quality_cutoff": pa.float32(),
                **{col: pa.float32() for col in (self.params.extra_models or {})}}

    def beam_transform(self):
        return _beam_transform(self.params)


def _beam_transform(params):
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton, TaggedOutput

    name = QualityKeepTopStage.name

    class Score(beam.DoFn):
        def setup(self):
            from pipeline.quality.stages import QualityScorer

            params.validate()
            self.scorer = QualityScorer(params)

        def process(self, doc):
            out = dict(doc)
            try:
                self.scorer.score_into(out)
            except Exception as exc:  # a dead letter, never a crashed run
                yield TaggedOutput("rejected", (out, error_reason(name, exc)))
                return
            yield out

    class Histogram(beam.CombineFn):
        def __init__(self, high: bool):
            self.high = high

        def create_accumulator(self):
            return np.zeros(BINS, dtype=np.int64)

        def add_input(self, acc, bits):
            acc[(bits >> 16) if self.high else (bits & 0xFFFF)] += 1
            return acc

        def merge_accumulators(self, accs):
            total = np.zeros(BINS, dtype=np.int64)
            for a in accs:
                total += a
            return total

        def extract_output(self, acc):
            return acc

    def first_pass(hist):
        n = int(hist.sum())
        k = top_count(n, params.keep_top)
        sel = select_bin(hist, k)
        return {"n": n, "k": k, "bin": None if sel is None else sel[0], "above": 0 if sel is None else sel[1]}

    def second_pass(low, first):
        if first["bin"] is None:
            return math.inf
        need = first["k"] - first["above"]
        b, _ = select_bin(low, need)
        return float(np.float32(bits_score((first["bin"] << 16) | b)))

    class Keep(beam.DoFn):
        def process(self, doc, cutoff):
            doc = dict(doc)
            doc["quality_cutoff"] = float(np.float32(cutoff)) if math.isfinite(cutoff) else None
            if doc["quality_score"] >= cutoff:
                yield doc
            else:
                yield TaggedOutput("rejected", (doc, reason(name, "below_top")))

    class Transform(beam.PTransform):
        def expand(self, docs):
            scored = docs | "Score" >> beam.ParDo(Score()).with_outputs("rejected", main="scored")
            bits = scored.scored | "Bits" >> beam.Map(lambda d: score_bits(d["quality_score"]))
            first = (bits | "HighBits" >> beam.CombineGlobally(Histogram(True))
                     | "PickBin" >> beam.Map(first_pass))
            low = (bits
                   | "InBin" >> beam.FlatMap(lambda b, f: [b] if f["bin"] is not None and (b >> 16) == f["bin"] else [],
                                             f=AsSingleton(first))
                   | "LowBits" >> beam.CombineGlobally(Histogram(False)))
            cutoff = low | "Cutoff" >> beam.Map(second_pass, first=AsSingleton(first))
            kept = scored.scored | "Keep" >> beam.ParDo(Keep(), cutoff=AsSingleton(cutoff)).with_outputs("rejected", main="kept")
            rejected = (scored.rejected, kept.rejected) | "Rejected" >> beam.Flatten()
            return kept.kept, rejected

    return Transform()

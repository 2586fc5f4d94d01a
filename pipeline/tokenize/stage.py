"""The ``tokenize`` collection stage: token shards as the terminal step of a pipeline.

In pipelines.yaml (after the last filtering/dedup stage)::

    - tokenize:
        tokenizer: tok/tokenizer.json   # an existing tokenizer (see below)
        output: OUT/tokens
        val_fraction: 0.005
        num_shards: 8

``beam_transform`` takes the final PCollection of Documents, encodes and writes token shards exactly as
``refinery tokenize`` does (same files, byte for byte, for the same documents and parameters), and
returns ``(docs unchanged, empty rejected)`` so the funnel's accounting is unaffected.

Only an existing tokenizer is supported here: training a tokenizer needs the final corpus first (a
sample, then a global training step), which does not fit inside the same Beam graph. Run
``refinery train-tokenizer`` on the refined output, then this stage or ``refinery tokenize``.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from pipeline.stages.base import CollectionStage, ParamError, register
from pipeline.tokenize.encode import EncodeAndWriteTokenShards, TokenizeParams


@dataclasses.dataclass
class TokenizeStageParams(TokenizeParams):
    """TokenizeParams (tokenizer, output, val_fraction, num_shards, val_num_shards, batch_size, eot_token)."""

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise ParamError(f"stage 'tokenize': {problems[0]}")


class _TokenizeDocuments(beam.PTransform):
    def __init__(self, params: TokenizeParams):
        super().__init__()
        self.params = params

    def expand(self, docs):
        _ = (
            docs
            | "IdText" >> beam.Map(lambda doc: (doc.get("id") or "", doc.get("text") or ""))
            | "Batch" >> beam.BatchElements(min_batch_size=self.params.batch_size,
                                            max_batch_size=self.params.batch_size)
            | "EncodeAndWrite" >> EncodeAndWriteTokenShards(self.params)
        )
        rejected = docs.pipeline | "NoRejections" >> beam.Create([])
        return docs, rejected


@register
class TokenizeStage(CollectionStage):
    name = "tokenize"
    Params = TokenizeStageParams
    columns = {}

    def beam_transform(self) -> beam.PTransform:
        """Docs -> (docs, empty rejected); writes token shards + manifest into ``params.output``."""
        self.params.validate()
        return _TokenizeDocuments(self.params)

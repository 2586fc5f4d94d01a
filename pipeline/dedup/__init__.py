"""Deduplication: MinHash LSH with connected components, exact text/URL dedup and exact-substring dedup.

Layout:

- ``stages``: the four CollectionStages of pipelines.yaml (``exact_dedup``, ``url_dedup``,
  ``substring_dedup`` here; ``minhash_dedup`` from ``minhash.stage``), Beam-free;
- ``keys``: what every stage shares to identify and order documents (node ids, keep rules,
  parameter choices, the metrics namespace);
- ``packed``: the compact forms that travel through the shuffles (documents as bytes, column batches,
  line batches by shard);
- ``normalize``: the text rule and word offsets (MinHash and exact dedup);
- ``exact``: text and URL dedup; ``substring``: exact-substring dedup;
- ``minhash/``: MinHash LSH (parameters and presets, hashing, banding, graph steps, connected
  components, the transform; see its ``__init__``);
- ``local``: run a dedup transform on an in-memory list (tests, benchmarks, notebooks).
"""

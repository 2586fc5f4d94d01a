"""Deduplication: MinHash LSH with connected components, exact text/URL dedup and exact-substring dedup.

Modules: ``normalize`` (the text rule and word offsets), ``minhash`` (datasketch-compatible signatures
in numba), ``lsh`` (banding, candidate edges, verification), ``components`` (connected components in
Beam), ``fuzzy`` (the MinHash dedup transform), ``exact`` (text and URL dedup), ``substring``
(exact-substring dedup), ``stages`` (the CollectionStages registered for pipelines.yaml).
"""

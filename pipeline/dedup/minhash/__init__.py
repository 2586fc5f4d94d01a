"""MinHash LSH near-duplicate removal, one module per step:

- ``stage``: the ``minhash_dedup`` stage, its one parameter object (``MinhashDedupParams``) and the LSH
  presets (no Beam, no numba);
- ``hashing``: datasketch-compatible MinHash signatures and band hashes in numba;
- ``graph``: numpy steps over packed batches (bucket records, star edges, Large-/Small-Star, labels);
- ``banding``: the Beam side of hashing and banding (signatures -> bucket batches -> candidate edges,
  optional Jaccard verification);
- ``components``: connected components in Beam (Kiveris et al.);
- ``transform``: ``MinhashDedup``, the whole stage as one Beam transform.

The hashing API (``MinHasher``, ``band_keys``, ``band_hashes``, ``jaccard_of_hash_sets``, ``PRESETS``,
``resolve_preset``, ...) is importable from this package directly (``from pipeline.dedup.minhash import
MinHasher``); it is loaded on first use, so importing the package (or its ``stage``) costs no numba start-up.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "hashing": ("MinHasher", "band_keys", "band_hashes", "jaccard_of_hash_sets", "permutation_parameters",
                "EMPTY_VALUE", "sha1_hash32_of_slice", "fast_hash32_of_slice", "shingle_hashes_of_code_points"),
    "stage": ("PRESETS", "SCHEMES", "SHINGLE_HASHES", "LshPreset", "resolve_preset", "MinhashDedupParams",
              "MinhashDedupStage"),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

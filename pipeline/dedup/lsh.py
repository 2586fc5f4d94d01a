"""Moved: the shared key helpers are in ``pipeline.dedup.keys``, MinHash banding in
``pipeline.dedup.minhash.banding``. This module only keeps the committed ``pipeline/dedup/local.py``
importing until its next commit (which imports ``pipeline.dedup.keys``); then it goes."""

from pipeline.dedup.keys import METRICS_NAMESPACE  # noqa: F401

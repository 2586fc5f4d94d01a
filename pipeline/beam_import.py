"""Importing Apache Beam for a local run without the optional libraries it never uses there.

``import apache_beam`` imports ``apache_beam.io``, which imports every connector whose client library is
installed: Google Cloud Storage, BigQuery and Pub/Sub (``google.cloud.*``, ``apitools``, ``oauth2client``)
and MongoDB (``pymongo``, ``bson``); ``apache_beam.typehints`` imports pandas for its DataFrame batch
types. Beam guards each of these imports with ``except ImportError`` because they are optional. On the
embedded runner with local (or ``https://``) inputs and a local output folder none of them is used (this
project's DoFns take documents, not DataFrames), yet they are about half of Beam's import time
(``bench/bench_startup.py``).

``import_beam_for_local_run(paths, beam_args)`` imports Beam with those client libraries reported missing,
but only when the run is local: no ``--runner`` other than the embedded one, and no path with a scheme
Beam's filesystems would serve (``gs://``, ``s3://``, ...). Afterwards the libraries import normally again;
only Beam's registry of filesystems lacks GCS for the rest of that process, which a local run does not
consult. Any other run imports Beam as it is.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Iterable, Sequence

# Optional libraries of Beam that a local run never calls (each guarded in Beam by except ImportError).
SKIPPED_FOR_LOCAL_RUNS = ("google.cloud", "apitools", "oauth2client", "pymongo", "bson", "pandas")
_EMBEDDED_RUNNERS = ("", "FnApiRunner", "InProcess")
# What "already loaded" means for them (``google.cloud`` itself is a namespace package set up at start-up).
_CLIENTS = ("google.cloud.storage", "google.cloud.bigquery", "apitools", "oauth2client", "pymongo", "bson", "pandas")


class _ReportMissing(importlib.abc.MetaPathFinder):
    """Reports the skipped libraries as not installed while Beam is imported."""

    def find_spec(self, name, path=None, target=None):
        if any(name == s or name.startswith(s + ".") for s in SKIPPED_FOR_LOCAL_RUNS):
            raise ModuleNotFoundError(f"No module named {name!r} (not loaded for a local run)", name=name)
        return None


def is_local_run(paths: Iterable[str], beam_args: Sequence[str]) -> bool:
    """True when no path needs a Beam filesystem (``http(s)://`` inputs are read by our own reader) and the
    runner is the embedded one."""
    for path in paths:
        scheme, sep, _ = str(path).partition("://")
        if sep and scheme.lower() not in ("http", "https"):
            return False
    args = list(beam_args)
    for i, arg in enumerate(args):
        if arg == "--runner":
            runner = args[i + 1] if i + 1 < len(args) else ""
        elif arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        else:
            continue
        if runner not in _EMBEDDED_RUNNERS:
            return False
    return True


def import_beam_for_local_run(paths: Iterable[str], beam_args: Sequence[str]) -> bool:
    """Import Beam without the cloud connectors when the run is local; True when they were skipped."""
    if "apache_beam" in sys.modules or not is_local_run(paths, beam_args):
        return False
    if any(m in sys.modules for m in _CLIENTS):
        return False  # already loaded by someone else: nothing to save, and Beam should see them
    finder = _ReportMissing()
    sys.meta_path.insert(0, finder)
    try:
        import apache_beam  # noqa: F401
    finally:
        sys.meta_path.remove(finder)
    return True

"""Document stages, one module each, pure Python (no Beam import).

Importing this package registers every built-in stage in ``pipeline.stages.base.STAGES``.
"""

import importlib

from pipeline.stages.base import STAGES, CollectionStage, DocumentStage, ParamError, register  # noqa: F401

# Modules that define stages. A module missing here is simply not registered.
_STAGE_MODULES = [
    "pipeline.stages.extract",
    "pipeline.stages.langid",
    "pipeline.stages.url_filter",
    "pipeline.stages.gopher_repetition",
    "pipeline.stages.gopher_quality",
    "pipeline.stages.line_corrections",
    "pipeline.stages.normalize",
    "pipeline.stages.c4_filters",
    "pipeline.stages.fineweb_filters",
    "pipeline.dedup.stages",
    "pipeline.tokenize.stage",
]


def load_all() -> dict:
    """Import every stage module (registering its stages) and return the registry."""
    for mod in _STAGE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # the module exists but one of its imports is missing: a real error
                raise
    return STAGES

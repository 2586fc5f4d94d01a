"""Document stages, one module each, pure Python (no Beam import).

Importing this package registers nothing by itself; ``load_all()`` imports every stage module and
returns the registry ``pipeline.stages.base.STAGES``. Stage modules are found, never listed:

- every module of this package (``pkgutil``), so a new filter stage is one file here;
- every module named ``stage.py`` or ``stages.py`` in another package of ``pipeline`` (the dedup
  and tokenize collection stages live beside their Beam code).

A module that fails to import is an error (never a silently missing stage), and so is a module that
defines a stage class with a ``name`` but forgot ``@register``.

``load_named(names)`` is what a run uses: it imports only the stage modules whose source holds one of
``names`` as a string literal (a stage's ``name = "..."``) and returns the registry once every name is
in it; otherwise (a name defined some other way, or a typo the error message should answer with every
stage) it imports them all, as ``load_all``. A run of ``rw_filtered`` then skips the dedup, quality,
tokenizer and C4/FineWeb modules (~0.04 s of start-up, ``bench/bench_startup.py``).
"""

import importlib
import inspect
import os
import pkgutil

from pipeline.stages.base import STAGES, CollectionStage, DocumentStage, ParamError, Param, Rule, Stage, register  # noqa: F401

# File names of stage modules in packages other than this one.
STAGE_MODULE_NAMES = ("stage", "stages")


def stage_modules() -> list:
    """Names of every module that may define stages: this package's modules, then the ``stage``/``stages``
    modules of the other packages under ``pipeline`` (found on disk, so no package is imported to find them)."""
    own = sorted(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.ispkg)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the pipeline package
    others = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d.isidentifier() and os.path.isfile(os.path.join(folder, d, "__init__.py")))
        rel = os.path.relpath(folder, root)
        if rel == "stages":
            continue
        package = "pipeline" if rel == "." else "pipeline." + rel.replace(os.sep, ".")
        others += [f"{package}.{n}" for n in STAGE_MODULE_NAMES if f"{n}.py" in files]
    return own + sorted(others)


def load_all() -> dict:
    """Import every stage module (registering its stages) and return the registry."""
    for name in stage_modules():
        _import_stage_module(name)
    return STAGES


def _module_file(name: str) -> str:
    """The source file of stage module ``name`` (a module of the ``pipeline`` package), found on disk."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(root, *name.split(".")[1:]) + ".py"


def load_named(names) -> dict:
    """The registry with at least the stages ``names``, importing only the stage modules that name one of
    them in a string literal; every stage module (``load_all``) when that does not register them all."""
    wanted = [n for n in dict.fromkeys(names) if n not in STAGES]
    if wanted:
        literals = [q + n + q for n in wanted for q in "\"'"]
        for name in stage_modules():
            try:
                with open(_module_file(name), encoding="utf-8") as f:
                    source = f.read()
            except OSError:
                return load_all()  # not a plain source file (a zip, a compiled build): import them all
            if any(literal in source for literal in literals):
                _import_stage_module(name)
    if any(n not in STAGES for n in names):
        return load_all()
    return STAGES


def _import_stage_module(name: str):
    """Import one stage module; a stage class in it with a ``name`` but no ``@register`` is an error."""
    module = importlib.import_module(name)  # an import error propagates: never a skipped stage
    for obj in vars(module).values():
        if (
            inspect.isclass(obj)
            and issubclass(obj, Stage)
            and obj.__module__ == name
            and obj.__dict__.get("name")
            and STAGES.get(obj.name) is not obj
        ):
            raise TypeError(f"{name}: stage class {obj.__name__} ('{obj.name}') is not @register-ed")
    return module

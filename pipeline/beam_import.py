"""Importing Apache Beam for a local run without the optional libraries it never uses there.

``import apache_beam`` imports ``apache_beam.io``, which imports every connector whose client library is
installed: Google Cloud Storage, BigQuery and Pub/Sub (``google.cloud.*``, ``apitools``, ``oauth2client``)
and MongoDB (``pymongo``, ``bson``); ``apache_beam.typehints`` imports pandas for its DataFrame batch
types. Beam guards each of these imports with ``except ImportError`` because they are optional (its own
BigQuery module, ``apache_beam.io.gcp.bigquery``, which pulls in ``requests`` and Google's auth libraries even
without the BigQuery client, is imported the same way, together with Pub/Sub and the cross-language IOs). On the
embedded runner with local (or ``https://``) inputs and a local output folder none of them is used (this
project's DoFns take documents, not DataFrames), yet they are about half of Beam's import time
(``bench/bench_startup.py``).

``import_beam_for_local_run(paths, beam_args)`` imports Beam with those client libraries reported missing,
but only when the run is local: no ``--runner`` other than the embedded one, and no path with a scheme
Beam's filesystems would serve (``gs://``, ``s3://``, ...). Afterwards the libraries import normally again;
only Beam's registry of filesystems lacks GCS for the rest of that process, which a local run does not
consult (nor ``beam.io.ReadFromBigQuery`` and the like; ``import apache_beam.io.gcp.bigquery`` still works).
Any other run imports Beam as it is. While the libraries are hidden, pyarrow is also asked once whether pandas
is there: it records "no", so the shard writer's ``pa.array(values, type=...)``, which asks pyarrow whether
``values`` is a pandas object, no longer imports pandas (~0.3 s) to find out. pyarrow retries the import for
anything that really needs pandas (``to_pandas``, ``from_pandas``), and when anyone imports pandas later,
pyarrow's pandas support is switched back on at once (``tests/pipeline/test_beam_import.py`` compares both
with Beam's plain import).

Three more libraries that Beam imports unguarded are loaded by a local run only when first used (~0.1 s):
``httplib2`` (the artifact stager's HTTP client, for remote runners) is created as a module whose code runs on
its first attribute access (``DEFERRED_FOR_LOCAL_RUNS``); the two names Beam's type checks take from beartype
and the ``Fernet`` class ``GroupByEncryptedKey`` takes from cryptography are forwarders that import the library
and put its real names into Beam's module on their first call (``FIRST_USE_NAMES``). On the 4-archive job of
``bench/bench_datatrove.py`` none of the three is ever loaded.

``speed_up_graph_construction()`` (``pipeline.runtime.make_options``/``new_pipeline`` call it) installs three
in-process shortcuts into Beam, each returning exactly what Beam would compute, on every runner (the graph is
built in this process whatever runs it; nothing here travels with the pickled job). ``WEBREFINERY_BEAM_SHORTCUTS=0``
turns them off (Beam as it is):

- ``inspect.signature`` of a plain Python function (or a method bound to one) is remembered until the
  function's code, defaults or annotations change. Beam asks for it ~30 times per ParDo each time it looks
  for state and timer parameters (every method of the DoFn, several times while building, serializing and
  running the graph): 66,000 calls for refinedweb_fast's 272 ParDos.
- ``PipelineOptions.view_as(C)`` for Beam's own option classes (standard, type, direct, debug, setup options,
  whose defaults depend on nothing but the flags) reuses the parse of the same flags instead of building and
  running a new argparse parser each time (Beam views the options once or twice per applied transform).
- Beam asks ``IPython.get_ipython()`` whether it runs in a notebook, importing IPython to learn that it does
  not (~0.1 s): when IPython is not imported there is no IPython shell, so the answer is False without the
  import; inside IPython or Jupyter (IPython already imported) Beam asks as before.
"""

from __future__ import annotations

import copy
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import threading
import types
import weakref
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

# Optional libraries (and Beam's BigQuery module) that a local run never calls, each imported by Beam under
# except ImportError.
SKIPPED_FOR_LOCAL_RUNS = ("google.cloud", "apitools", "oauth2client", "pymongo", "bson", "pandas", "apache_beam.io.gcp.bigquery")
_EMBEDDED_RUNNERS = ("", "FnApiRunner", "InProcess")
# What "already loaded" means for them (``google.cloud`` itself is a namespace package set up at start-up).
_CLIENTS = ("google.cloud.storage", "google.cloud.bigquery", "apitools", "oauth2client", "pymongo", "bson", "pandas")


# Libraries Beam imports unguarded at start-up but calls only where a local run never goes (httplib2: the
# HTTP client of the artifact stager, for remote runners): their modules are created at once and run their
# code when anyone first touches them (``_DeferredModule``).
DEFERRED_FOR_LOCAL_RUNS = ("httplib2",)


class _ReportMissing(importlib.abc.MetaPathFinder):
    """Reports the skipped libraries as not installed while Beam is imported, and defers the deferred ones."""

    def find_spec(self, name, path=None, target=None):
        if any(name == s or name.startswith(s + ".") for s in SKIPPED_FOR_LOCAL_RUNS):
            raise ModuleNotFoundError(f"No module named {name!r} (not loaded for a local run)", name=name)
        if name in DEFERRED_FOR_LOCAL_RUNS:
            return _deferred_spec(self, name, path, target)
        return None


# ---- modules whose code runs on first use -------------------------------------------------------------------

_REALIZE_LOCK = threading.RLock()


class _DeferredModule(types.ModuleType):
    """A module created by the import system whose code has not run yet: the first attribute access (by
    anyone, a later ``import`` statement included) runs it, and from then on it is a plain module, the one
    object in ``sys.modules``. Only ``vars(module)`` does not run it: it is the namespace the code will fill
    (objsize, which Beam's state cache uses on every bundle, collects every module's namespace to leave
    them out of its sizes)."""

    def __getattribute__(self, attr):
        if attr == "__dict__":
            return object.__getattribute__(self, attr)
        _realize(self)
        return getattr(self, attr)

    def __setattr__(self, attr, value):
        _realize(self)
        setattr(self, attr, value)

    def __delattr__(self, attr):
        _realize(self)
        delattr(self, attr)


def _realize(module: types.ModuleType) -> None:
    """Run a deferred module's code now (once, whichever thread asks first)."""
    with _REALIZE_LOCK:
        if type(module) is not _DeferredModule:
            return  # realized meanwhile by another thread
        namespace = object.__getattribute__(module, "__dict__")
        loader = namespace.pop("__deferred_loader__")
        object.__setattr__(module, "__class__", types.ModuleType)
        try:
            loader.exec_module(module)
        except BaseException:
            if sys.modules.get(namespace.get("__name__")) is module:
                del sys.modules[namespace["__name__"]]  # as a failed import leaves it
            raise


class _DeferringLoader(importlib.abc.Loader):
    """Creates the module as its own loader would and leaves running its code to the first access."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return None  # the default module (a source module's loader creates none of its own)

    def exec_module(self, module):
        namespace = module.__dict__
        namespace["__loader__"] = self.loader
        if namespace.get("__spec__") is not None:
            namespace["__spec__"].loader = self.loader
        namespace["__deferred_loader__"] = self.loader
        module.__class__ = _DeferredModule


def _deferred_spec(finder, name, path, target):
    """The spec the other finders give ``name``, its source loader wrapped in a ``_DeferringLoader`` (None, for
    the import system to carry on, when no finder knows it or it is not plain Python source)."""
    for other in sys.meta_path:
        find = getattr(other, "find_spec", None) if other is not finder else None
        spec = find(name, path, target) if find is not None else None
        if spec is not None:
            break
    else:
        return None
    if type(spec.loader) is not importlib.machinery.SourceFileLoader:
        return spec
    spec.loader = _DeferringLoader(spec.loader)
    return spec


# ---- names Beam takes from a library at import but uses only in code a local run does not reach ------------

# (Beam module, name, library module, kind). ``apache_beam.typehints.typehints`` does ``from beartype.door import
# is_subhint`` and ``from beartype.roar import BeartypeDoorException`` (beartype's import is ~0.06 s) for
# ``is_consistent_with`` on two plain classes, which graphs of this project's untyped DoFns do not reach;
# ``apache_beam.transforms.util`` takes ``Fernet`` from cryptography (~0.01 s) for ``GroupByEncryptedKey``.
# While Beam is imported, those library modules are stand-ins: a forwarder for each function or class, a
# placeholder (never raised) for each exception class. The first call of a forwarder imports the libraries of
# its Beam module and puts their real names into it before calling the real one, so an ``except
# BeartypeDoorException`` around that call (evaluated only once the call raised) sees the real class.
FIRST_USE_NAMES = (
    ("apache_beam.typehints.typehints", "is_subhint", "beartype.door", "callable"),
    ("apache_beam.typehints.typehints", "BeartypeDoorException", "beartype.roar", "exception"),
    ("apache_beam.transforms.util", "Fernet", "cryptography.fernet", "callable"),
)


class _StandIn(types.ModuleType):
    """A stand-in library module; any name it lacks comes from the real module (imported then, the stand-ins
    dropped)."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        _drop_stand_ins()
        import importlib

        return getattr(importlib.import_module(self.__name__), attr)


def _install_real_names(beam_module: str) -> types.ModuleType:
    """Import the libraries behind ``beam_module``'s stand-in names and put their real names into it."""
    import importlib

    module = sys.modules[beam_module]
    for owner, name, library, _ in FIRST_USE_NAMES:
        if owner == beam_module:
            setattr(module, name, getattr(importlib.import_module(library), name))
    return module


def _forwarder(beam_module: str, name: str) -> Callable:
    def on_first_use(*args, **kwargs):
        return getattr(_install_real_names(beam_module), name)(*args, **kwargs)

    on_first_use.__name__ = on_first_use.__qualname__ = name
    on_first_use.__wrapped_beam__ = (beam_module, name)  # type: ignore[attr-defined]
    return on_first_use


def _install_stand_ins() -> bool:
    """Put the stand-in library modules into ``sys.modules`` (none whose package is imported already or not
    installed: Beam then imports the real one, or fails as it would)."""
    import importlib.util

    stand_ins: Dict[str, _StandIn] = {}
    for owner, name, library, kind in FIRST_USE_NAMES:
        top = library.split(".")[0]
        if owner in sys.modules or top in sys.modules or library in sys.modules:
            continue
        if importlib.util.find_spec(top) is None:
            continue
        module = stand_ins.setdefault(library, _StandIn(library))
        if kind == "exception":
            setattr(module, name, type(name + "NotImportedYet", (Exception,), {"__module__": __name__}))
        else:
            setattr(module, name, _forwarder(owner, name))
    sys.modules.update(stand_ins)
    return bool(stand_ins)


def _drop_stand_ins() -> None:
    for _, _, library, _ in FIRST_USE_NAMES:
        if isinstance(sys.modules.get(library), _StandIn):
            del sys.modules[library]


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
    _install_stand_ins()
    try:
        import apache_beam  # noqa: F401

        pandas_off = _probe_pyarrow_pandas()
    finally:
        sys.meta_path.remove(finder)
        _drop_stand_ins()
    if pandas_off:
        sys.meta_path.insert(0, _PandasImportWatcher())
    return True


# ---- pyarrow without pandas, until someone uses pandas ----------------------------------------------------

def _pandas_shim():
    """pyarrow's lazy pandas importer (``pyarrow.lib._pandas_api``), or None if this pyarrow has none."""
    try:
        import pyarrow.lib
    except ImportError:
        return None
    shim = getattr(pyarrow.lib, "_pandas_api", None)
    return shim if shim is not None and hasattr(type(shim), "have_pandas") else None


def _probe_pyarrow_pandas() -> bool:
    """With pandas hidden, let pyarrow try (and fail) its one optional pandas import; True when it did."""
    if "pandas" in sys.modules:
        return False
    shim = _pandas_shim()
    if shim is None:
        return False
    return not shim.have_pandas  # pyarrow's first, optional attempt: pandas is hidden, so it records "absent"


class _ReenablePandasLoader(importlib.abc.Loader):
    """pandas' own loader, then pyarrow's pandas support switched back on (``shim.pd`` retries its import)."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # anything else a loader offers (resource readers ...) is pandas' loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            self.loader.exec_module(module)
        finally:
            module.__loader__ = self.loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self.loader
        shim = _pandas_shim()
        if shim is not None:
            try:
                shim.pd  # noqa: B018 - pyarrow's required import: now succeeds, pandas support is back on
            except ImportError:
                pass  # pyarrow refuses this pandas (too old), as it would have on its first attempt


class _PandasImportWatcher(importlib.abc.MetaPathFinder):
    """Waits for ``import pandas`` (by anyone) to switch pyarrow's pandas support back on; used once."""

    def find_spec(self, name, path=None, target=None):
        if name != "pandas":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ReenablePandasLoader(spec.loader)
        return spec


# ---- cheaper graph construction (exact shortcuts, in this process only) ------------------------------------

_installed = False


SHORTCUTS_ENV = "WEBREFINERY_BEAM_SHORTCUTS"  # "0": build graphs with Beam as it is (bench_startup.py compares)


def speed_up_graph_construction() -> None:
    """Install the signature memo, the options-view cache and the IPython short cut into Beam (idempotent;
    nothing when ``WEBREFINERY_BEAM_SHORTCUTS=0``)."""
    global _installed
    if _installed or os.environ.get(SHORTCUTS_ENV, "1") == "0":
        return
    _installed = True
    _memoize_signatures()
    _cache_option_views()
    _skip_ipython_probe()


# Attributes that make inspect.signature look elsewhere than the function's code, defaults and annotations.
_SIGNATURE_REDIRECTS = ("__wrapped__", "__signature__", "_partialmethod", "__partialmethod__")


class SignatureMemo:
    """Beam's ``get_signature`` and ``get_function_args_defaults``, remembered per plain Python function
    (bound to an instance or not) for as long as its code, defaults and annotations stay the same; anything
    else (builtins, classes, partials, wrapped functions) goes to Beam every time."""

    def __init__(self, get_signature: Callable[[Any], Any], get_function_args_defaults: Callable[[Any], Any]):
        self._get_signature = get_signature
        self._args_defaults = get_function_args_defaults
        self._memo: "weakref.WeakKeyDictionary[types.FunctionType, Dict[bool, list]]" = weakref.WeakKeyDictionary()

    def _entry(self, func) -> Optional[list]:
        """[validity key, signature or None, (args, defaults) or None] of ``func``, or None if not memoizable."""
        target, bound = func, False
        if type(func) is types.MethodType:
            target, bound = func.__func__, True
        if type(target) is not types.FunctionType:
            return None
        attrs = target.__dict__
        if attrs and any(k in attrs for k in _SIGNATURE_REDIRECTS):
            return None
        annotations = target.__annotations__
        key = (target.__code__, target.__defaults__, target.__kwdefaults__,
               tuple(annotations.items()) if annotations else ())
        per_function = self._memo.get(target)
        if per_function is None:
            per_function = self._memo[target] = {}
        entry = per_function.get(bound)
        if entry is None or entry[0] != key:
            entry = per_function[bound] = [key, None, None]
        return entry

    def get_signature(self, func):
        entry = self._entry(func)
        if entry is None:
            return self._get_signature(func)
        if entry[1] is None:
            entry[1] = self._get_signature(func)
        return entry[1]

    def get_function_args_defaults(self, func):
        entry = self._entry(func)
        if entry is None:
            return self._args_defaults(func)
        if entry[2] is None:
            args, defaults = self._args_defaults(func)
            entry[2] = (tuple(args), tuple(defaults))
        return list(entry[2][0]), list(entry[2][1])  # fresh lists, as Beam returns


def _memoize_signatures() -> None:
    from apache_beam.transforms import core, ptransform, util
    from apache_beam.typehints import decorators

    original = decorators.get_signature
    memo = SignatureMemo(original, core.get_function_args_defaults)
    for module in (decorators, core, ptransform, util):
        if getattr(module, "get_signature", None) is original:  # only where it is Beam's own function
            module.get_signature = memo.get_signature
    core.get_function_args_defaults = memo.get_function_args_defaults


# Beam's option classes whose argparse defaults depend on nothing but the flags (no environment, no registry).
_CACHEABLE_VIEWS = ("StandardOptions", "TypeOptions", "DirectOptions", "DebugOptions", "SetupOptions")


def cached_view_as(original: Callable[[Any, type], Any], cacheable: Sequence[type], base_init: Callable) -> Callable:
    """``PipelineOptions.view_as`` reusing one parse per (option class, flags) for the ``cacheable`` classes."""
    parses: Dict[Any, Any] = {}
    allowed = frozenset(cacheable)

    def view_as(self, cls):
        flags = self.__dict__.get("_flags")
        if cls not in allowed or cls.__init__ is not base_init or flags is None:
            return original(self, cls)
        try:
            key = (cls, tuple(flags))
            parsed = parses.get(key)
        except TypeError:  # unhashable flags
            return original(self, cls)
        if parsed is None:
            view = original(self, cls)
            parses[key] = copy.deepcopy(view._visible_options)  # as parsed, before anyone changes a value
            return view
        logging.basicConfig()  # what cls.__init__ does first
        view = cls.__new__(cls)
        view._flags = flags
        view._visible_options = _copy_parse(parsed)  # values (lists) are never shared between option objects
        for name in view._visible_option_list():
            if name not in self._all_options:
                self._all_options[name] = getattr(view._visible_options, name)
        view._all_options = self._all_options
        return view

    view_as.__wrapped_beam__ = original  # type: ignore[attr-defined]
    return view_as


_IMMUTABLE = (str, int, float, bool, type(None))


def _copy_parse(parsed):
    """A copy of an argparse namespace: its own copy of every value that could be changed in place."""
    copied = copy.copy(parsed)
    for name, value in list(vars(copied).items()):
        if not isinstance(value, _IMMUTABLE):
            setattr(copied, name, copy.deepcopy(value))
    return copied


def _cache_option_views() -> None:
    from apache_beam.options import pipeline_options as po

    classes = [getattr(po, name, None) for name in _CACHEABLE_VIEWS]
    if any(c is None or "_add_argparse_args" not in c.__dict__ for c in classes):
        return  # another Beam than the one this was written against: leave it alone
    po.PipelineOptions.view_as = cached_view_as(po.PipelineOptions.view_as, classes, po.PipelineOptions.__init__)


def no_ipython_unless_imported(original: Callable[[], bool]) -> Callable[[], bool]:
    """Beam's ``is_in_ipython``, answering False without importing IPython when it is not imported."""

    def is_in_ipython():
        if "IPython" not in sys.modules:
            return False  # no IPython shell can exist without the module
        return original()

    is_in_ipython.__wrapped_beam__ = original  # type: ignore[attr-defined]
    return is_in_ipython


def _skip_ipython_probe() -> None:
    import apache_beam.pipeline
    from apache_beam.runners.direct import direct_runner
    from apache_beam.utils import interactive_utils

    original = interactive_utils.is_in_ipython
    fast = no_ipython_unless_imported(original)
    for module in (interactive_utils, apache_beam.pipeline, direct_runner):
        if getattr(module, "is_in_ipython", None) is original:
            module.is_in_ipython = fast

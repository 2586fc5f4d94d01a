"""numba kernels compiled on first use, so that importing a dedup module (building a graph) does not import numba.

``numba`` itself takes ~0.4 s to import. The dedup modules (normalization, MinHash hashing, substring
marks) define their kernels at module level and are imported whenever a graph with a dedup stage is built,
also when no document ever reaches the stage (a one-record run whose record a filter rejects). With
``lazy_njit`` instead of ``numba.njit`` a kernel is a plain ``LazyKernel`` until it is first called; the
first call of any kernel of a module imports numba and turns *every* ``LazyKernel`` in that module's globals
(and in the home modules of kernels it imported from others) into its ``numba.njit`` dispatcher (same
options, same function, so the same on-disk cache entry), before numba compiles anything: a kernel that
calls another finds the other's dispatcher in the module globals, as with eager decoration. Callers that imported a kernel by name keep the ``LazyKernel``, which forwards to the
dispatcher.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict

_LOCK = threading.Lock()


class LazyKernel:
    """A function to be compiled with ``numba.njit(**options)`` at its module's first kernel call."""

    def __init__(self, fn: Callable, options: Dict[str, Any]):
        self.fn, self.options = fn, options
        self.dispatcher = None
        self.__name__, self.__qualname__, self.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        self.__module__, self.__wrapped__ = fn.__module__, fn

    def __call__(self, *args):
        dispatcher = self.dispatcher
        if dispatcher is None:
            compile_module(self.fn.__globals__)
            dispatcher = self.dispatcher
        return dispatcher(*args)

    def __reduce__(self):  # pickled by reference to its module attribute, as a plain function would be
        return _kernel_of, (self.__module__, self.__name__)


def _kernel_of(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(module), name)


def compile_module(module_globals: Dict[str, Any]) -> None:
    """Replace every ``LazyKernel`` in a module's globals with its ``numba.njit`` dispatcher, and so in the
    home modules of the kernels found (a kernel imported from another module calls that module's kernels)."""
    with _LOCK:
        pending, seen = [module_globals], set()
        while pending:
            current = pending.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            for name, kernel in list(current.items()):
                if not isinstance(kernel, LazyKernel):
                    continue
                if kernel.dispatcher is None:
                    import numba

                    kernel.dispatcher = numba.njit(**kernel.options)(kernel.fn)
                current[name] = kernel.dispatcher
                pending.append(kernel.fn.__globals__)


def lazy_njit(**options) -> Callable[[Callable], LazyKernel]:
    """``@lazy_njit(cache=True, nogil=True)`` in place of ``@numba.njit(...)`` (see the module docstring)."""

    def wrap(fn: Callable) -> LazyKernel:
        return LazyKernel(fn, options)

    return wrap

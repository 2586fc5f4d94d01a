"""Run a Python function under a wall-clock deadline, from the main thread or any worker thread.

Beam's in-process runner calls ``DoFn.process`` from worker threads, where ``signal.SIGALRM``
cannot be used (signal handlers only run in the main thread, and an alarm is process-wide). This
module uses one watchdog thread per process instead: ``call_with_deadline(seconds, fn, ...)``
registers the calling thread with a deadline; when the deadline passes before ``fn`` returns, the
watchdog raises an exception *inside the calling thread* through CPython's
``PyThreadState_SetAsyncExc``. The same mechanism serves the main thread, so there is no second
code path and no clash with other users of ``SIGALRM`` (pytest-timeout, host applications).

Limits (by design of CPython, documented so nobody relies on more):

- The exception is delivered when the thread next executes Python bytecode. Code that stays in C
  (one long lxml/lexbor call, a blocking ``time.sleep``/socket read, a regex on a huge string) is
  only interrupted after that call returns. Input-size limits (``extract``'s ``max_html_bytes``
  and nesting-depth guard) are what bound the C parts.
- The injected exception derives from ``BaseException`` so that libraries' ``except Exception``
  blocks do not swallow it; code with a bare ``except:`` could still swallow it, in which case
  ``call_with_deadline`` notices afterwards (the deadline had fired) and still raises
  ``DeadlineExceeded`` once ``fn`` returns. A library that turns the interrupt into an error of its own
  (resiliparse's Rust code raises pyo3's ``PanicException`` when it arrives during a callback into
  Python) gives ``DeadlineExceeded`` too: after the deadline fired, any exception from ``fn`` counts as it.
- Interrupting a library mid-call may leave its module-level caches half-updated; the extractors
  used here keep no cross-document state that matters (trafilatura runs with ``deduplicate=False``).
- CPython only (``ctypes.pythonapi``).
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import os
import threading
import time
from typing import Any, Callable, List, Optional, Tuple, TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The function did not finish within its deadline."""


class _DeadlineInterrupt(BaseException):
    """Injected into the working thread by the watchdog (a BaseException: not swallowed by
    ``except Exception``). Never escapes ``call_with_deadline``."""


# int PyThreadState_SetAsyncExc(unsigned long id, PyObject *exc): exc=NULL clears a pending one.
_SET_ASYNC_EXC = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_CLEAR_ASYNC_EXC = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


class _Ticket:
    """One armed deadline for one thread."""

    __slots__ = ("thread_id", "deadline", "done", "fired")

    def __init__(self, thread_id: int, deadline: float):
        self.thread_id = thread_id
        self.deadline = deadline
        self.done = False  # set by the working thread (under the watchdog lock) when fn returned
        self.fired = False  # set by the watchdog (under the lock) when it injected the interrupt


class _Watchdog:
    """A daemon thread that waits for the earliest deadline and interrupts overdue threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: List[Tuple[float, int, _Ticket]] = []
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._pid = -1

    def arm(self, seconds: float) -> _Ticket:
        ticket = _Ticket(threading.get_ident(), time.monotonic() + seconds)
        with self._cond:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                # first use, or a forked child (threads do not survive fork): start a watchdog here
                self._heap = []
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._watch, name="deadline-watchdog", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (ticket.deadline, next(self._seq), ticket))
            if self._heap[0][2] is ticket:  # the watchdog sleeps until an earlier deadline otherwise
                self._cond.notify()
        return ticket

    def disarm(self, ticket: _Ticket) -> bool:
        """Mark the call finished; True when the watchdog had already fired for it. A fired but
        not yet delivered interrupt is cleared here, so it cannot surface later in the caller."""
        with self._cond:
            ticket.done = True
            if ticket.fired:
                _CLEAR_ASYNC_EXC(ticket.thread_id, None)
            return ticket.fired

    def _watch(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, ticket = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if not ticket.done:
                    ticket.fired = True
                    _SET_ASYNC_EXC(ticket.thread_id, _DeadlineInterrupt)


_WATCHDOG = _Watchdog()


def call_with_deadline(seconds: Optional[float], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Return ``fn(*args, **kwargs)``; raise ``DeadlineExceeded`` if it runs longer than ``seconds``
    (wall clock). ``seconds`` None or <= 0 means no deadline. Works in any thread (see module doc
    for what cannot be interrupted)."""
    if seconds is None or seconds <= 0:
        return fn(*args, **kwargs)
    ticket = _WATCHDOG.arm(seconds)
    fired = False
    try:
        try:
            result = fn(*args, **kwargs)
        finally:
            fired = _WATCHDOG.disarm(ticket)
    except _DeadlineInterrupt:
        raise DeadlineExceeded(f"call did not finish within {seconds:g} s") from None
    except BaseException as exc:
        # The interrupt landed where a compiled library was calling back into Python, and the library
        # turned it into an error of its own (pyo3 raises PanicException, a BaseException): once the
        # deadline has fired, whatever fn raises is the timeout's doing. Ctrl-C and exit stay theirs.
        if fired and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise DeadlineExceeded(f"call did not finish within {seconds:g} s") from exc
        raise
    if fired:  # fn swallowed the interrupt, or finished just as the deadline fired
        raise DeadlineExceeded(f"call did not finish within {seconds:g} s")
    return result

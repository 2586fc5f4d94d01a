"""Shared driver of the fuzz targets: atheris (coverage-guided libFuzzer) when installed, a plain
random-mutation loop otherwise, seed corpora written to a temporary folder, libFuzzer-style output.

``run_fuzzer(argv, test_one_input, seeds, instrumented)`` is what each target's ``main`` calls:

- ``seeds``: a list of ``bytes`` written into a temporary folder at start (never into the repository);
  it is passed to the fuzzer as an extra corpus folder after the folders the user named (libFuzzer
  adds new inputs to the first folder only). With no folder named, the working corpus is
  ``<tmp>/webrefinery-<target>-corpus`` (kept between runs), so the seed folder only ever holds seeds.
- atheris mode (default when ``import atheris`` works): libFuzzer's own flags (``-runs=N``,
  ``-max_total_time=S``, ``-timeout=S``, ``-artifact_prefix=DIR/``, ...) pass through unchanged.
- replay: file arguments (not folders) are run once each, in both modes.
- fallback mode (``--no-atheris`` or atheris missing): mutates the seeds at random (bit flips, byte
  sets, inserts, deletes, duplicated ranges, splices, cuts, inserted format tokens) and calls the target;
  it understands ``-runs``, ``-max_total_time``, ``-seed``, ``-artifact_prefix`` and ``-timeout``
  (checked after each input). A failing input is written to ``<artifact_prefix>crash-<sha1>`` and the
  process exits with status 1, as libFuzzer does. The last line is libFuzzer's
  ``Done N runs in S second(s)`` so one parser reads both modes.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import tempfile
import time
import traceback
from typing import Callable, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # running ``python fuzz/x.py`` from a checkout without an install
    sys.path.insert(0, REPO)

try:
    import atheris
except ImportError:  # the fallback loop below still runs every target
    atheris = None

# Byte strings the fallback mutator inserts (format tokens the parser branches on).
TOKENS = [
    b"WARC/1.0\r\n", b"WARC/0.17\n", b"WARC-Type: response\r\n", b"WARC-Type: conversion\r\n",
    b"WARC-Type: resource\r\n", b"Content-Length: ", b"Content-Length: 99999999999\r\n", b"Content-Length: -1\r\n",
    b"Content-Type: application/http; msgtype=response\r\n", b"Content-Type: text/html\r\n",
    b"WARC-Target-URI: <http://a.b/>\r\n", b"WARC-Record-ID: <urn:uuid:x>\r\n", b"\r\n\r\n", b"\n\n", b"\r\n",
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 HTTP/1.1 200 OK\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Content-Encoding: gzip\r\n", b"Content-Encoding: br\r\n", b"Content-Encoding: deflate\r\n",
    b"charset=utf-16", b"charset=iso-2022-jp", b"<meta charset=\"utf-7\">", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff",
    b"\xef\xbb\xbf", b"\xff\xfe", b"\x00", b"0\r\n\r\n", b"ffffffff\r\n", b"filedesc://x 0.0.0.0 20240101000000 text/plain 10\n",
    b"http://a.b/ 1.2.3.4 20240101000000 text/html 5\n",
]


def _flag(args: Sequence[str], name: str, default: Optional[str] = None) -> Optional[str]:
    for a in args:
        if a.startswith(f"-{name}="):
            return a.split("=", 1)[1]
    return default


def write_seed_corpus(seeds: Sequence[bytes], prefix: str) -> str:
    """The temporary folder ``<tmp>/webrefinery-<prefix>-seeds`` holding one file per seed, named by
    its SHA-1 (rewriting is idempotent, so runs and parallel jobs can share it); returns its path."""
    folder = os.path.join(tempfile.gettempdir(), f"webrefinery-{prefix}-seeds")
    os.makedirs(folder, exist_ok=True)
    for data in seeds:
        name = hashlib.sha1(data).hexdigest()
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
    return folder


def _load_corpus(folders: Sequence[str]) -> List[bytes]:
    inputs = []
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    inputs.append(fh.read())
    return inputs


def mutate(data: bytes, pool: Sequence[bytes], rng: random.Random, max_len: int) -> bytes:
    """1 to 8 random edits of ``data`` (libFuzzer's kinds of mutation, without coverage feedback)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        kind = rng.randrange(9)
        n = len(buf)
        if kind == 0 and n:  # flip one bit
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif kind == 1 and n:  # set a byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif kind == 2:  # insert random bytes
            i = rng.randint(0, n)
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
        elif kind == 3 and n:  # delete a range
            i = rng.randrange(n)
            del buf[i: i + rng.randint(1, 64)]
        elif kind == 4 and n:  # duplicate a range
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 256))
            k = rng.randint(0, n)
            buf[k:k] = buf[i:j]
        elif kind == 5 and pool:  # splice with another input
            other = rng.choice(pool)
            if other:
                i, j = rng.randint(0, n), rng.randint(0, len(other))
                buf = buf[:i] + other[j:]
        elif kind == 6 and n:  # cut the end
            del buf[rng.randint(0, n):]
        elif kind == 7:  # insert a format token
            i = rng.randint(0, n)
            buf[i:i] = rng.choice(TOKENS)
        elif kind == 8 and n:  # replace digits with other digits (lengths, sizes, status codes)
            i = rng.randrange(n)
            buf[i: i + 1] = str(rng.choice([0, 1, 9, 10, 255, 4096, 2 ** 31, 2 ** 63])).encode()
    return bytes(buf[:max_len])


def fallback_fuzz(args: Sequence[str], test_one_input: Callable[[bytes], None], corpus_dirs: Sequence[str]) -> int:
    """Random-mutation loop over the corpus; 0 when no input failed, 1 after writing the failing input."""
    runs = int(_flag(args, "runs", "-1"))
    max_time = float(_flag(args, "max_total_time", "0"))
    seed = int(_flag(args, "seed", str(int(time.time()))))
    timeout = float(_flag(args, "timeout", "0"))
    max_len = int(_flag(args, "max_len", str(1 << 20)))
    prefix = _flag(args, "artifact_prefix", "./")
    if runs < 0 and max_time <= 0:
        max_time = 60.0
    rng = random.Random(seed)
    pool = _load_corpus(corpus_dirs) or [b""]
    print(f"INFO: fallback random-mutation fuzzing (no coverage feedback), seed {seed}, {len(pool)} inputs", flush=True)
    start = time.time()
    done = 0
    while (runs < 0 or done < runs) and (max_time <= 0 or time.time() - start < max_time):
        data = pool[done] if done < len(pool) else mutate(rng.choice(pool), pool, rng, max_len)
        t0 = time.time()
        try:
            test_one_input(data)
            slow = timeout > 0 and time.time() - t0 > timeout
            if slow:
                raise TimeoutError(f"one input took {time.time() - t0:.1f}s (> -timeout={timeout:g})")
        except BaseException as exc:  # noqa: BLE001 - any failure is a finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            path = f"{prefix}crash-{hashlib.sha1(data).hexdigest()}"
            with open(path, "wb") as fh:
                fh.write(data)
            print("=== Uncaught Python exception: ===", flush=True)
            traceback.print_exc()
            print(f"==ERROR: input written to {path}", flush=True)
            return 1
        done += 1
        if done & (done - 1) == 0:
            print(f"#{done}\tpulse exec/s: {done / max(time.time() - start, 1e-9):.0f}", flush=True)
    seconds = int(time.time() - start)
    print(f"#{done}\tDONE exec/s: {done / max(time.time() - start, 1e-9):.0f}", flush=True)
    print(f"Done {done} runs in {seconds} second(s)", flush=True)
    return 0


def run_fuzzer(argv: Sequence[str], test_one_input: Callable[[bytes], None], seeds: Sequence[bytes],
               name: str) -> int:
    """Entry point of a target: ``argv`` as given on the command line (program name first)."""
    args = list(argv[1:])
    use_atheris = atheris is not None and "--no-atheris" not in args
    args = [a for a in args if a != "--no-atheris"]
    positional = [a for a in args if not a.startswith("-")]
    flags = [a for a in args if a.startswith("-")]
    files = [a for a in positional if os.path.isfile(a)]
    if files:  # replay: run each named input once
        if use_atheris:
            atheris.Setup([argv[0]] + flags + files, test_one_input)
            atheris.Fuzz()
        for path in files:
            with open(path, "rb") as fh:
                test_one_input(fh.read())
            print(f"Executed {path}: no failure", flush=True)
        return 0
    # libFuzzer adds new inputs to the first folder: with none named, a default one beside the seeds
    corpus_dirs = positional or [os.path.join(tempfile.gettempdir(), f"webrefinery-{name}-corpus")]
    seed_dir = write_seed_corpus(seeds, name)
    for folder in corpus_dirs:
        os.makedirs(folder, exist_ok=True)
    dirs = corpus_dirs + [seed_dir]
    if not use_atheris:
        return fallback_fuzz(flags, test_one_input, dirs)
    atheris.Setup([argv[0]] + flags + dirs, test_one_input)
    atheris.Fuzz()  # exits the process when fuzzing ends
    return 0

"""MinHash signatures of documents, vectorized with numba, bit-compatible with datasketch.

A document's shingles are its n-word windows (default n=5) over the normalized text of
``pipeline.dedup.normalize`` (see the rule there). RefinedWeb shingles GPT-2 tokens; words are the
tokenizer-free equivalent used by datatrove and DCLM (5 words are about 6-7 GPT-2 tokens). Each
shingle's UTF-8 bytes are hashed to 32 bits and pushed through ``num_perm`` random permutations;
the signature is the per-permutation minimum.

Compatibility with datasketch (checked by tests/pipeline/dedup/test_minhash.py against the installed version):

- scheme ``"affine32"`` (datasketch >= 2.0 default): ``h = sha1(shingle)[:4]`` read little-endian
  (``datasketch.hashfunc.sha1_hash32``), pre-mixed once with the 32-bit MurmurHash3 finalizer
  (``fmix32``), then ``a_k * h + b_k mod 2^32``. Parameters come from
  ``np.random.RandomState(seed)``: ``a = randint(0, 2^31, num_perm, uint32) * 2 + 1`` (odd), then
  ``b = randint(0, 2^32, num_perm, uint32)``.
- scheme ``"legacy"`` (datasketch 1.x): ``((a_k * h + b_k) mod 2^64) mod (2^61 - 1)``, truncated to
  32 bits, with ``(a_k, b_k)`` drawn pairwise by ``randint(1, p)``, ``randint(0, p)`` as uint64.

So ``MinHasher(num_perm, seed).signature(text)`` equals
``datasketch.MinHash(num_perm, seed).update_batch(word_shingles(text, n)).hashvalues``.
The whole path (normalization, word offsets, SHA-1 of each shingle, permutation and minimum) runs in
numba: SHA-1 is implemented here from FIPS 180-4 so that no Python call happens per shingle.

``shingle_hash="fast"`` replaces SHA-1 by a 64-bit multiply-xorshift hash of the shingle bytes
(folded to 32 bits): faster, equally good for LSH, but no longer equal to datasketch's values.

A document without any word has no shingle: ``MinHasher.shingle_hashes`` is empty and the signature
is all ``0xFFFFFFFF`` (datasketch's empty value); LSH must not bucket such documents together.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from pipeline.dedup.jit import lazy_njit  # numba is imported at the first kernel call
from pipeline.dedup.minhash.stage import PRESETS, SCHEMES, SHINGLE_HASHES, LshPreset, resolve_preset  # noqa: F401 (re-exported)
from pipeline.dedup.normalize import code_points, normalize_code_points, tables

EMPTY_VALUE = np.uint32(0xFFFFFFFF)
_MERSENNE = (1 << 61) - 1


def permutation_parameters(num_perm: int, seed: int, scheme: str = "affine32") -> Tuple[np.ndarray, np.ndarray]:
    """The (a, b) permutation parameters datasketch draws for ``MinHash(num_perm, seed, scheme=scheme)``."""
    gen = np.random.RandomState(seed)
    if scheme == "affine32":
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        return a.astype(np.uint32), b.astype(np.uint32)
    if scheme == "legacy":
        pairs = np.array(
            [(gen.randint(1, _MERSENNE, dtype=np.uint64), gen.randint(0, _MERSENNE, dtype=np.uint64)) for _ in range(num_perm)],
            dtype=np.uint64,
        )
        return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])
    raise ValueError(f"unknown MinHash scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


# ---------------------------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------------------------

_U32 = np.uint32


@lazy_njit(cache=True, nogil=True, inline="always")
def _rotl32(x, n):
    # every intermediate is cast back to uint32 so that LLVM works on 32-bit registers (rol, no masks)
    return _U32((x << _U32(n)) | (x >> _U32(32 - n)))


@lazy_njit(cache=True, nogil=True)
def _sha1_compress(block, off, w, state):
    """One SHA-1 compression (FIPS 180-4, 6.1.2) of the 64 bytes block[off:off+64] into ``state``."""
    for t in range(16):
        j = off + 4 * t
        w[t] = (_U32(block[j]) << _U32(24)) | (_U32(block[j + 1]) << _U32(16)) | (_U32(block[j + 2]) << _U32(8)) | _U32(block[j + 3])
    for t in range(16, 80):
        w[t] = _rotl32(_U32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]), 1)
    a = _U32(state[0])
    b = _U32(state[1])
    c = _U32(state[2])
    d = _U32(state[3])
    e = _U32(state[4])
    for t in range(0, 20):  # Ch(b, c, d)
        tmp = _U32(_rotl32(a, 5) + _U32(d ^ (b & (c ^ d))) + e + _U32(0x5A827999) + w[t])
        e, d, c, b, a = d, c, _rotl32(b, 30), a, tmp
    for t in range(20, 40):  # Parity
        tmp = _U32(_rotl32(a, 5) + _U32(b ^ c ^ d) + e + _U32(0x6ED9EBA1) + w[t])
        e, d, c, b, a = d, c, _rotl32(b, 30), a, tmp
    for t in range(40, 60):  # Maj(b, c, d)
        tmp = _U32(_rotl32(a, 5) + _U32((b & c) | (d & (b | c))) + e + _U32(0x8F1BBCDC) + w[t])
        e, d, c, b, a = d, c, _rotl32(b, 30), a, tmp
    for t in range(60, 80):  # Parity
        tmp = _U32(_rotl32(a, 5) + _U32(b ^ c ^ d) + e + _U32(0xCA62C1D6) + w[t])
        e, d, c, b, a = d, c, _rotl32(b, 30), a, tmp
    state[0] = _U32(state[0] + a)
    state[1] = _U32(state[1] + b)
    state[2] = _U32(state[2] + c)
    state[3] = _U32(state[3] + d)
    state[4] = _U32(state[4] + e)


@lazy_njit(cache=True, nogil=True)
def sha1_hash32_of_slice(buf, start, end, w, tail, state):
    """datasketch's ``sha1_hash32``: the first 4 bytes of SHA-1(buf[start:end]) read little-endian.

    ``w`` (uint32[80]), ``tail`` (uint8[128]) and ``state`` (uint32[5]) are caller-provided scratch."""
    state[0] = 0x67452301
    state[1] = 0xEFCDAB89
    state[2] = 0x98BADCFE
    state[3] = 0x10325476
    state[4] = 0xC3D2E1F0
    length = end - start
    off = start
    while end - off >= 64:
        _sha1_compress(buf, off, w, state)
        off += 64
    rem = end - off
    for i in range(rem):
        tail[i] = buf[off + i]
    tail[rem] = 0x80  # padding: one bit, zeros, then the message length in bits (big-endian)
    total = 64 if rem < 56 else 128
    for i in range(rem + 1, total - 8):
        tail[i] = 0
    bits = np.int64(length) * 8
    for i in range(8):
        tail[total - 1 - i] = (bits >> (8 * i)) & 0xFF
    _sha1_compress(tail, 0, w, state)
    if total == 128:
        _sha1_compress(tail, 64, w, state)
    h0 = np.int64(state[0])
    # digest bytes 0..3 are h0 big-endian; datasketch reads them little-endian
    return ((h0 & 0xFF) << 24) | ((h0 & 0xFF00) << 8) | ((h0 >> 8) & 0xFF00) | ((h0 >> 24) & 0xFF)


@lazy_njit(cache=True, nogil=True)
def fast_hash32_of_slice(buf, start, end):
    """A 64-bit multiply-xorshift hash of buf[start:end], folded to 32 bits (not datasketch's)."""
    h = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(end - start)
    m = np.uint64(0xFF51AFD7ED558CCD)
    i = start
    while i + 8 <= end:
        v = np.uint64(0)
        for j in range(8):
            v |= np.uint64(buf[i + j]) << np.uint64(8 * j)
        h = (h ^ v) * m
        h ^= h >> np.uint64(29)
        i += 8
    v = np.uint64(0)
    j = 0
    while i < end:
        v |= np.uint64(buf[i]) << np.uint64(8 * j)
        i += 1
        j += 1
    h = (h ^ v) * m
    h ^= h >> np.uint64(32)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(29)
    return np.int64((h ^ (h >> np.uint64(32))) & np.uint64(0xFFFFFFFF))


@lazy_njit(cache=True, nogil=True)
def shingle_hashes(buf, starts, ends, nwords, ngram, use_sha1):
    """32-bit hashes (as uint32) of every n-word shingle, in order; fewer words than n -> 1 shingle."""
    if nwords == 0:
        return np.empty(0, dtype=np.uint32)
    count = nwords - ngram + 1 if nwords >= ngram else 1
    span = ngram if nwords >= ngram else nwords
    out = np.empty(count, dtype=np.uint32)
    w = np.empty(80, dtype=np.uint32)
    tail = np.empty(128, dtype=np.uint8)
    state = np.empty(5, dtype=np.uint32)
    for i in range(count):
        s = starts[i]
        e = ends[i + span - 1]
        if use_sha1:
            out[i] = sha1_hash32_of_slice(buf, s, e, w, tail, state)
        else:
            out[i] = fast_hash32_of_slice(buf, s, e)
    return out


@lazy_njit(cache=True, nogil=True)
def shingle_hashes_of_code_points(cps, table, lower, ngram, use_sha1):
    """Normalization + shingling + hashing of one document in one call (see ``shingle_hashes``)."""
    buf, _, starts, ends, nwords = normalize_code_points(cps, table, lower)
    return shingle_hashes(buf, starts, ends, nwords, ngram, use_sha1)


@lazy_njit(cache=True, nogil=True)
def _fmix32(h):
    h = np.uint32(h)
    h ^= h >> np.uint32(16)
    h = np.uint32(h * np.uint32(0x85EBCA6B))
    h ^= h >> np.uint32(13)
    h = np.uint32(h * np.uint32(0xC2B2AE35))
    h ^= h >> np.uint32(16)
    return h


_BLOCK = 4096  # shingles per block: the block's mixed hashes stay in L1 while all permutations sweep it


@lazy_njit(cache=True, nogil=True)
def min_affine32(hashes, a, b, out):
    """out[k] = min(out[k], min over shingles of (a[k] * fmix32(h) + b[k]) mod 2^32) (datasketch ``affine32``).

    Loop order: permutations outside, a block of shingles inside, so the inner loop is a min-reduction
    over a contiguous array that LLVM vectorizes (about 10x faster than shingles outside)."""
    n = a.shape[0]
    m = hashes.shape[0]
    mixed = np.empty(min(m, _BLOCK), dtype=np.uint32)
    for lo in range(0, m, _BLOCK):
        hi = min(m, lo + _BLOCK)
        for i in range(lo, hi):
            mixed[i - lo] = _fmix32(hashes[i])
        cnt = hi - lo
        for k in range(n):
            ak = a[k]
            bk = b[k]
            best = out[k]
            for i in range(cnt):
                v = np.uint32(ak * mixed[i] + bk)
                best = min(best, v)
            out[k] = best


@lazy_njit(cache=True, nogil=True)
def min_legacy(hashes, a, b, out):
    """out[k] = min(out[k], min over shingles of ((a[k]*h + b[k]) mod 2^64 mod (2^61-1)) & (2^32-1)) (datasketch 1.x)."""
    n = a.shape[0]
    m = hashes.shape[0]
    p = np.uint64(_MERSENNE)
    mask = np.uint64(0xFFFFFFFF)
    wide = np.empty(m, dtype=np.uint64)
    for i in range(m):
        wide[i] = np.uint64(hashes[i])
    for k in range(n):
        ak = a[k]
        bk = b[k]
        best = out[k]
        for i in range(m):
            v = np.uint32(((ak * wide[i] + bk) % p) & mask)
            best = min(best, v)
        out[k] = best


@lazy_njit(cache=True, nogil=True)
def band_hashes(sig, bands, rows):
    """One 64-bit hash per band of ``rows`` consecutive signature values (seeded by the band index)."""
    out = np.empty(bands, dtype=np.uint64)
    m1 = np.uint64(0xFF51AFD7ED558CCD)
    m2 = np.uint64(0xC4CEB9FE1A85EC53)
    for j in range(bands):
        h = np.uint64(j + 1) * np.uint64(0x9E3779B97F4A7C15)
        for t in range(rows):
            h = (h ^ np.uint64(sig[j * rows + t])) * m1
            h ^= h >> np.uint64(31)
        h ^= h >> np.uint64(33)
        h *= m2
        h ^= h >> np.uint64(33)
        out[j] = h
    return out


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------


class MinHasher:
    """Computes MinHash signatures (and LSH band hashes) of texts; one instance per worker.

    ``MinHasher(num_perm=9000, seed=1, ngram=5)`` matches ``datasketch.MinHash(9000, seed=1)``
    updated with ``word_shingles(text, 5)``.
    """

    def __init__(self, num_perm: int, seed: int = 1, ngram: int = 5, scheme: str = "affine32", shingle_hash: str = "sha1"):
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        if scheme not in SCHEMES:
            raise ValueError(f"unknown MinHash scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
        if shingle_hash not in SHINGLE_HASHES:
            raise ValueError(f"unknown shingle hash {shingle_hash!r}; expected one of {', '.join(SHINGLE_HASHES)}")
        self.num_perm, self.seed, self.ngram = num_perm, seed, ngram
        self.scheme, self.shingle_hash = scheme, shingle_hash
        self.a, self.b = permutation_parameters(num_perm, seed, scheme)
        self._table, self._lower = tables()
        self._use_sha1 = shingle_hash == "sha1"
        self._min = min_affine32 if scheme == "affine32" else min_legacy

    def shingle_hashes(self, text: str) -> np.ndarray:
        """The 32-bit hash of every shingle of ``text`` (in order, repeats included)."""
        return shingle_hashes_of_code_points(code_points(text), self._table, self._lower, self.ngram, self._use_sha1)

    def shingle_hashes_of_words(self, words: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """``shingle_hashes`` of a text from its ``normalize.normalized_words`` (computed once when several
        dedup stages need the normalized text, as ``pipeline.dedup.fused`` does)."""
        buf, starts, ends = words
        return shingle_hashes(buf, starts, ends, len(starts), self.ngram, self._use_sha1)

    def signature_of_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """The signature (uint32[num_perm]) of a set given by its shingle hashes."""
        sig = np.full(self.num_perm, EMPTY_VALUE, dtype=np.uint32)
        if hashes.shape[0]:
            self._min(hashes, self.a, self.b, sig)
        return sig

    def signature(self, text: str) -> np.ndarray:
        """The MinHash signature of ``text`` (uint32[num_perm]); all 0xFFFFFFFF when it has no word."""
        return self.signature_of_hashes(self.shingle_hashes(text))

    def signatures(self, texts: List[str]) -> np.ndarray:
        """Signatures of many texts as a (len(texts), num_perm) uint32 array."""
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        for i, text in enumerate(texts):
            out[i] = self.signature(text)
        return out


def band_keys(sig: np.ndarray, bands: int, rows: int) -> List[bytes]:
    """LSH bucket keys of one signature: 10 bytes each, band index (big-endian uint16) + band hash."""
    if bands * rows > sig.shape[0]:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} hash values, signature has {sig.shape[0]}")
    if bands > 0xFFFF:
        raise ValueError(f"at most 65535 bands, got {bands}")
    hashes = band_hashes(sig, bands, rows)
    rec = np.empty(bands, dtype=[("band", ">u2"), ("hash", "<u8")])
    rec["band"] = np.arange(bands, dtype=np.uint16)
    rec["hash"] = hashes
    raw = rec.tobytes()
    return [raw[i : i + 10] for i in range(0, 10 * bands, 10)]


def jaccard_of_hash_sets(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sets of shingle hashes (arrays; repeats ignored); 0.0 when both are empty."""
    ua, ub = np.unique(a), np.unique(b)
    if ua.size == 0 and ub.size == 0:
        return 0.0
    inter = np.intersect1d(ua, ub, assume_unique=True).size
    return inter / float(ua.size + ub.size - inter)

"""MinHash signatures, normalization and LSH banding (no Beam): datasketch agreement and S-curve rates."""

from __future__ import annotations

import gzip
import json
import math
import random
import unicodedata

import numpy as np
import pytest
from datasketch import MinHash

from pipeline.paths import require_shared
from pipeline.dedup.minhash import PRESETS, MinHasher, band_keys, jaccard_of_hash_sets, resolve_preset
from pipeline.dedup.normalize import nfkc, normalize_text, word_shingles
from pipeline.dedup.stages import MinhashDedupParams
from pipeline.stages.base import ParamError


@pytest.fixture(scope="module")
def cc_texts():
    path = require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh]


def reference_normalize(text: str) -> str:
    """The documented rule, written independently and slowly (one character at a time)."""
    solo_ranges = [(0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
                   (0xF900, 0xFAFF), (0xFF66, 0xFF9F), (0x20000, 0x2FA1F), (0x0E00, 0x0EFF)]
    words, cur, after_solo = [], None, False
    for ch in unicodedata.normalize("NFKC", text).lower():
        cat = unicodedata.category(ch)
        if ch.isspace() or cat[0] in "ZPS" or cat in ("Cc", "Cs"):
            cur, after_solo = None, False
            continue
        if cat == "Cf":
            continue
        is_mark = cat[0] == "M"
        solo = cat != "Nd" and not is_mark and any(lo <= ord(ch) <= hi for lo, hi in solo_ranges)
        if cat == "Nd":
            ch = "0"
        if cur is None or solo or (after_solo and not is_mark):
            cur = []
            words.append(cur)
        cur.append(ch)
        after_solo = solo or (after_solo and is_mark)
    return " ".join("".join(w) for w in words)


TRICKY = [
    "Hello,  World! It's 2019.",
    "iPhone 11 发布了新的手机",
    "ภาษาไทยง่ายนิดเดียว ๑๒๓",
    "hyphen\u00adation zero\u200bwidth ﬁne ＦＵＬＬ width ① ²",
    "İstanbul ΣΟΦΟΣ Straße",
    "tab\tnew\nline\r\n  nbsp\u00a0here…",
    "emoji 😀 mixed🙂text $100 + 5% <tag> a_b a-b",
    "combining e\u0301 and cafe\u0301; 日本語のテキスト",
    "",
    "   \n\t ",
]


def test_normalize_follows_the_documented_rule(cc_texts):
    for text in TRICKY + cc_texts[:120]:
        assert normalize_text(text) == reference_normalize(text)
    assert normalize_text("Hello,  World! It's 2019.") == "hello world it s 0000"
    assert normalize_text("iPhone 11 发布") == "iphone 00 发 布"


def test_fast_nfkc_equals_unicodedata(cc_texts):
    for text in TRICKY + cc_texts:
        assert nfkc(text) == unicodedata.normalize("NFKC", text)


def test_word_shingles_short_and_empty_texts():
    assert word_shingles("", 5) == []
    assert word_shingles("!!! ...", 5) == []
    assert word_shingles("Only three words", 5) == [b"only three words"]
    assert word_shingles("a b c d e f", 5) == [b"a b c d e", b"b c d e f"]
    hasher = MinHasher(64)
    empty = hasher.signature("")
    assert empty.dtype == np.uint32 and np.all(empty == 0xFFFFFFFF)
    assert hasher.shingle_hashes("?!").size == 0


@pytest.mark.parametrize("num_perm", [128, 9000])
def test_signatures_equal_datasketch_affine32(cc_texts, num_perm):
    hasher = MinHasher(num_perm, seed=7, ngram=5)
    texts = TRICKY[:-2] + cc_texts[:25]
    for text in texts:
        ds = MinHash(num_perm=num_perm, seed=7)
        ds.update_batch(word_shingles(text, 5))
        assert np.array_equal(hasher.signature(text), ds.hashvalues), text[:60]
    # one by one with update() too, on a long document
    text = max(cc_texts[:50], key=len)
    ds = MinHash(num_perm=num_perm, seed=7)
    for shingle in word_shingles(text, 5):
        ds.update(shingle)
    assert np.array_equal(hasher.signature(text), ds.hashvalues)


@pytest.mark.parametrize("num_perm", [64, 256])
def test_signatures_equal_datasketch_legacy_and_other_ngrams(cc_texts, num_perm):
    for ngram in (3, 5):
        hasher = MinHasher(num_perm, seed=3, ngram=ngram, scheme="legacy")
        for text in cc_texts[30:40]:
            ds = MinHash(num_perm=num_perm, seed=3, scheme="legacy")
            ds.update_batch(word_shingles(text, ngram))
            assert np.array_equal(hasher.signature(text).astype(np.uint64), ds.hashvalues)


def test_fast_shingle_hash_estimates_the_same_similarity(cc_texts):
    sha, fast = MinHasher(512, shingle_hash="sha1"), MinHasher(512, shingle_hash="fast")
    base = next(w for w in (normalize_text(t).split() for t in cc_texts) if len(w) > 400)
    variant = list(base)
    for i in range(0, len(variant), 25):
        variant[i] = "qzxv"
    a, b = " ".join(base), " ".join(variant)
    truth = jaccard_of_hash_sets(sha.shingle_hashes(a), sha.shingle_hashes(b))
    assert not np.array_equal(sha.signature(a), fast.signature(a))
    for h in (sha, fast):
        est = float(np.mean(h.signature(a) == h.signature(b)))
        assert abs(est - truth) < 0.08  # 512 permutations: std ~0.022
    assert np.array_equal(fast.signature(a), MinHasher(512, shingle_hash="fast").signature(a))


def test_band_keys_are_per_band_and_deterministic():
    hasher = MinHasher(112)
    sig = hasher.signature("the quick brown fox jumps over the lazy dog again and again")
    keys = band_keys(sig, 14, 8)
    assert len(keys) == 14 and all(len(k) == 10 for k in keys)
    assert [int.from_bytes(k[:2], "big") for k in keys] == list(range(14))
    assert keys == band_keys(sig.copy(), 14, 8)
    changed = sig.copy()
    changed[3 * 8 + 2] ^= 1  # one value of band 3
    other = band_keys(changed, 14, 8)
    assert [i for i in range(14) if keys[i] != other[i]] == [3]
    with pytest.raises(ValueError):
        band_keys(sig, 15, 8)


def test_presets_and_params_validation():
    assert PRESETS["refinedweb"].num_perm == 9000
    assert PRESETS["dclm"].num_perm == 1395 and PRESETS["fineweb"].num_perm == 112
    assert 0.73 < PRESETS["refinedweb"].threshold() < 0.75
    assert abs(PRESETS["refinedweb"].candidate_probability(0.8) - 0.995) < 0.005
    assert resolve_preset("fineweb", rows=10).num_perm == 140
    MinhashDedupParams().validate()
    for bad in (dict(preset="nope"), dict(bands=0), dict(verify_threshold=1.5), dict(keep="random"),
                dict(scheme="affine64"), dict(max_rounds=0), dict(on_unconverged="ignore")):
        with pytest.raises(ParamError):
            MinhashDedupParams(**bad).validate()


# ------------------------------------------------------------------------------------------------
# LSH rates: pairs with a known true Jaccard similarity s collide in >= 1 band with P = 1-(1-s^r)^b.
# ------------------------------------------------------------------------------------------------


def make_variant(words, target, rng, ngram=5):
    """A copy of ``words`` with spaced single-word substitutions, aiming at Jaccard ``target``."""
    shingles = max(1, len(words) - ngram + 1)
    changed = shingles * (1 - target) / (1 + target)
    k = max(1, math.ceil(changed / ngram))
    slots = rng.sample(range(len(words) // ngram), min(k, len(words) // ngram))
    out = list(words)
    for slot in slots:
        out[slot * ngram + rng.randrange(ngram)] = "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(9))
    return out


def pair_collides(hasher, preset, a, b):
    ka = band_keys(hasher.signature(a), preset.bands, preset.rows)
    kb = band_keys(hasher.signature(b), preset.bands, preset.rows)
    return any(x == y for x, y in zip(ka, kb))


@pytest.fixture(scope="module")
def base_docs(cc_texts):
    docs = []
    for text in cc_texts:
        words = normalize_text(text).split()
        if len(words) >= 300 and len(set(words)) > 150:
            docs.append(words[:600])
    assert len(docs) >= 60
    return docs[:60]


@pytest.mark.parametrize("preset_name,targets", [("fineweb", (0.95, 0.75, 0.68, 0.3)), ("refinedweb", (0.9, 0.76, 0.72, 0.45))])
def test_lsh_candidate_rates_follow_the_s_curve(base_docs, preset_name, targets):
    preset = PRESETS[preset_name]
    hasher = MinHasher(preset.num_perm, seed=1)
    rng = random.Random(1234)
    for target in targets:
        probs, hits = [], 0
        for words in base_docs:
            variant = make_variant(words, target, rng)
            a, b = " ".join(words), " ".join(variant)
            s = jaccard_of_hash_sets(hasher.shingle_hashes(a), hasher.shingle_hashes(b))
            probs.append(preset.candidate_probability(s))
            hits += pair_collides(hasher, preset, a, b)
        expected = sum(probs)
        sd = math.sqrt(sum(p * (1 - p) for p in probs))
        assert abs(hits - expected) <= 4 * sd + 1.5, (preset_name, target, hits, expected, sd)
        if min(probs) > 0.999:  # well above the threshold: every pair is a candidate
            assert hits == len(probs)
        if sum(probs) < 0.05:  # well below: none (allow one: P(>= 2) < 0.002 here)
            assert hits <= 1

"""PII redaction (pipeline/quality/pii.py and the ``pii`` stage): measured precision/recall on a labelled set
of real text, placeholders, byte-identical text outside the replaced spans, linear time on hostile input."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.paths import require_shared
from pipeline.quality import pii
from pipeline.quality.stages import PiiParams, PiiStage
from pipeline.stages.base import apply_stage

LABELS = Path(__file__).with_name("pii_labelled_set.json")


def _raw_records(src: str):
    path = require_shared(*src.split("/"))
    if src.endswith(".jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line).get("text") or "" for line in fh]
    return [v.get("articleBody") or "" for v in json.loads(path.read_text()).values()]


def measure_labelled_set():
    """(per-kind {tp, fp, fn, precision, recall}, overall) of find_pii on the labelled set's full texts."""
    doc = json.loads(LABELS.read_text())
    gold = {}
    texts = {src: _raw_records(src) for src in doc["sources"]}
    for lab in doc["labels"]:
        span = texts[lab["source"]][lab["record"]][lab["start"]:lab["end"]]
        assert hashlib.sha1(span.encode()).hexdigest() == lab["sha1"], f"labelled span moved: {lab}"
        gold[(lab["source"], lab["record"], lab["start"], lab["end"])] = lab["kind"]
    pred = {}
    for src, records in texts.items():
        for r, text in enumerate(records):
            for m in pii.find_pii(text, ("email", "ip", "phone")):
                pred[(src, r, m.start, m.end)] = m.kind
    out = {}
    for kind in ("email", "ip", "phone", "all"):
        g = {k for k, v in gold.items() if kind in ("all", v)}
        p = {k for k, v in pred.items() if kind in ("all", v)}
        tp = len({k for k in g & p if gold[k] == pred[k]})
        out[kind] = {"gold": len(g), "predicted": len(p), "tp": tp, "precision": round(tp / len(p), 3) if p else 1.0,
                     "recall": round(tp / len(g), 3) if g else 1.0}
    return out


def test_precision_and_recall_on_the_labelled_real_text(shared_data, capsys):
    m = measure_labelled_set()
    with capsys.disabled():
        print("\nPII on the labelled set (tests/pipeline/quality/pii_labelled_set.json):")
        for kind, v in m.items():
            print(f"  {kind:6s} gold {v['gold']:3d} predicted {v['predicted']:3d} precision {v['precision']:.3f} recall {v['recall']:.3f}")
    assert m["email"]["precision"] >= 0.95 and m["email"]["recall"] >= 0.95
    assert m["phone"]["precision"] >= 0.9 and m["phone"]["recall"] >= 0.6
    assert m["all"]["precision"] >= 0.95
    assert m["ip"]["recall"] == 1.0 and m["ip"]["precision"] == 1.0  # one public address, four private ones kept


@pytest.mark.parametrize("text,kind", [
    ("write to jane.roe+news@mail.example.org today", "email"),
    ("resolver 8.8.8.8 answered", "ip"),
    ("peer 2001:4860:4860::8888 answered", "ip"),
    ("call (212) 555-0134 now", "phone"),
    ("call 1-800-873-2730 now", "phone"),
    ("Telefon: +49 561 9804848 bitte", "phone"),
    ("Reach Us +441474556909 today", "phone"),
])
def test_each_kind_is_found_and_replaced(text, kind):
    out, counts, matches = pii.redact(text)
    assert counts[kind] == 1 and len(matches) == 1
    assert pii.DEFAULT_PLACEHOLDERS[kind] in out


@pytest.mark.parametrize("text", [
    "lan 192.168.1.20, loopback 127.0.0.1, docs 192.0.2.7, shared 100.64.0.1, link 169.254.3.3, multicast 224.0.0.251",
    "ipv6 fe80::1 and ::1 and fd00::42 and 2001:db8::1 stay",
    "std::vector<int> and Foo::Bar::baz and 12:30:45 and 1:2:3",
    "version 1.2.3.4.5 and 300.1.1.1 and 1.2.3",
    "ISBN 978-80-7185-998-7, ISSN 0022-2860, 2018-12-11 10:16:53, zip 93241-1413",
    "pages 1063 - 1064 - 1065 and 1 600 000 km2",
    "amig@s, señor@s, @handle, \"@type\": x, abs@.nsf, user@localhost",
])
def test_non_pii_is_left_alone(text):
    assert pii.redact(text, kinds=pii.KINDS)[0] == text


def test_cards_need_luhn_and_a_network_prefix():
    assert pii.redact("card 4111 1111 1111 1111 ok", kinds=("card",))[0] == "card <CARD> ok"
    assert pii.redact("card 4111-1111-1111-1111 ok", kinds=("card",))[1]["card"] == 1
    assert pii.redact("card 4111 1111 1111 1112 ok", kinds=("card",))[1]["card"] == 0  # Luhn fails
    assert pii.redact("id 9111111111111111 ok", kinds=("card",))[1]["card"] == 0      # no network prefix
    assert pii.redact("card 4111 1111 1111 1111 ok")[1] == {"email": 0, "ip": 0, "phone": 0}  # off by default


def test_custom_placeholders_and_stage_columns():
    stage = PiiStage(PiiParams(kinds=("email", "phone"), placeholders={"email": "[mail]"}))
    stage.setup()
    doc = {"id": "1", "text": "a@b.example.com or +1 212 555 0134 from 8.8.8.8"}
    out, why = apply_stage(stage, doc)
    assert why is None
    assert out["text"] == "[mail] or <PHONE> from 8.8.8.8"
    assert (out["pii_email"], out["pii_phone"]) == (1, 1) and "pii_ip" not in out
    assert set(stage.output_columns()) == {"pii_email", "pii_phone"}
    assert doc["text"].startswith("a@b")  # the input document is not modified


SAFE = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
PIECES = st.sampled_from(["x@y.example.com", "8.8.4.4", "(415) 555-0199", "+44 20 7946 0958", "192.168.0.1",
                          "2606:4700:4700::1111", "4111111111111111", " ", "\n", "@", ".", "-", "+1", "::"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(SAFE, PIECES), max_size=12))
def test_text_outside_the_replaced_spans_is_byte_identical(parts):
    text = "".join(parts)
    out, counts, matches = pii.redact(text, kinds=pii.KINDS)
    rebuilt, pos, o = [], 0, 0
    for m in matches:  # walk both strings: equal outside spans, placeholder inside
        assert out[o:o + (m.start - pos)] == text[pos:m.start]
        o += m.start - pos
        ph = pii.DEFAULT_PLACEHOLDERS[m.kind]
        assert out[o:o + len(ph)] == ph
        o += len(ph)
        pos = m.end
    assert out[o:] == text[pos:]
    assert sum(counts.values()) == len(matches)
    assert all(a.end <= b.start for a, b in zip(matches, matches[1:]))


ADVERSARIAL = {
    "local-part run": "a" * 50_000 + "@",
    "dotted labels": "a@" + "b." * 25_000,
    "dots": "1." * 30_000,
    "digits": "1" * 60_000,
    "spaced digits": "1 " * 30_000,
    "dashed digits": "1-" * 30_000,
    "colons": "a:" * 30_000,
    "hex colons": "ab:" * 20_000 + "::",
    "plus digits": "+1 " * 20_000,
    "parens": "+1 (1) " * 8_000,
    "ats": "@a." * 20_000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_no_super_linear_time_on_hostile_input(name):
    """8x the input takes about 8x the time (a quadratic pattern would take 64x; the bound leaves room for a
    loaded machine)."""
    unit = ADVERSARIAL[name]

    def cost(text):
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            pii.redact(text, kinds=pii.KINDS)
            best = min(best, time.perf_counter() - t)
        return best

    small, big = cost(unit), cost(unit * 8)
    assert big < 1.5, f"{name}: {len(unit) * 8:,} characters took {big:.2f}s"
    assert big < 24 * small + 0.02, f"{name}: 8x the input took {big / max(small, 1e-9):.1f}x the time"

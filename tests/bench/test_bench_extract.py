"""Tests of ``bench/bench_extract.py``'s per-page interleaved timing (``--per-page-rounds``): every
extractor runs every page the given number of times, in alternating order, and only its fastest try
per page counts."""

from __future__ import annotations

import time

from bench import bench_extract as be


def test_per_page_cpu_runs_every_page_rounds_times_interleaved_and_keeps_the_fastest(monkeypatch):
    calls = []
    clock = iter(range(1000))  # one tick per reading: a try's CPU is the ticks it spans
    monkeypatch.setattr(time, "process_time", lambda: next(clock))
    slow_first = {("a", 0): 5, ("b", 0): 1}  # extra ticks for the first try of page 0

    def run_one(name, item):
        calls.append((name, item))
        for _ in range(slow_first.pop((name, item), 0)):
            next(clock)

    total = be.per_page_cpu(["a", "b"], [0, 1], run_one, rounds=3)
    assert calls == [("a", 0), ("b", 0), ("b", 0), ("a", 0), ("a", 0), ("b", 0),
                     ("a", 1), ("b", 1), ("b", 1), ("a", 1), ("a", 1), ("b", 1)]
    # every plain try spans one tick; the slow first tries of page 0 do not count
    assert total == {"a": 2, "b": 2}


def test_per_page_cpu_on_a_real_extractor_is_positive_and_finite():
    stage = be.ExtractStage(be.ExtractParams(extractor="webrefinery"))
    stage.setup()
    html = "<html><body><article>" + "<p>Words of a short article for timing.</p>" * 20 + "</article></body></html>"

    def run_one(name, item):
        stage.process({"id": str(item), "text": "", "html": html})

    total = be.per_page_cpu(["webrefinery"], [0, 1, 2], run_one, rounds=2)
    assert 0 < total["webrefinery"] < 5

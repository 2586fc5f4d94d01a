"""bench_datatrove's own parts, without datatrove: the archives it reads, which extractor rows it runs, the
record comparison, medians, the table and the pinned child measurement (nothing here installs datatrove)."""

from __future__ import annotations

import os
import sys

import pytest

from bench import bench_datatrove as bd
from pipeline.io.readers import iter_records


def test_archives_are_the_issues_894_html_responses(shared_data):
    paths = bd.archive_paths(shared_data)
    assert [p.name for p in paths] == [f"{a}.warc.gz" for a in bd.ARCHIVES]
    pages = sum(1 for p in paths for doc, reason in iter_records(str(p)) if reason is None)
    assert pages == 894


def test_missing_archive_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="shared archives missing: .*serp-archive-0000"):
        bd.archive_paths(tmp_path)


def test_extractor_rows_keep_order_and_note_the_missing():
    run, notes = bd.extractor_rows({"resiliparse": 1, "trafilatura": 2})
    assert run == ["trafilatura", "resiliparse"]
    assert len(notes) == 1 and "'webrefinery'" in notes[0] and "skipped" in notes[0]
    run, notes = bd.extractor_rows(["trafilatura", "resiliparse", "webrefinery"])
    assert run == list(bd.OUR_EXTRACTORS) and notes == []


def test_same_records_is_a_multiset_comparison():
    ours = [("a", "u1"), ("a", "u1"), ("b", "u2")]
    assert bd.same_records(ours, [["b", "u2"], ["a", "u1"], ["a", "u1"]]) == (True, 0, 0)
    assert bd.same_records(ours, [("a", "u1"), ("b", "u2")]) == (False, 1, 0)  # a repeated id counts twice
    assert bd.same_records(ours[:1], [("c", None)]) == (False, 1, 1)


def test_median_and_summary():
    assert bd.median([3.0, 1.0, 2.0]) == 2.0
    assert bd.median([4.0, 1.0]) == 2.5
    with pytest.raises(ValueError):
        bd.median([])
    runs = [{"wall": w, "cpu": c, "rss_mb": m, "records": 10, "kept": 4}
            for w, c, m in [(5.0, 4.0, 100.0), (2.0, 1.5, 300.0), (4.0, 3.0, 200.0)]]
    s = bd.summarize(runs)
    assert (s["wall"], s["cpu"], s["rss_mb"], s["rounds"]) == (4.0, 3.0, 200.0, 3)
    assert s["pages_s"] == pytest.approx(2.5)


def test_table_ratios_against_each_rows_baseline():
    def summary(wall, cpu=None):
        return {"wall": wall, "cpu": cpu or wall, "rss_mb": 10.0, "records": 8, "kept": 2, "pages_s": 8 / wall}

    rows = [("datatrove", summary(40.0), "datatrove"), ("ours, resiliparse", summary(4.0), "datatrove"),
            (bd.DT_STARTUP, summary(6.0), bd.DT_STARTUP), ("ours, 1 record", summary(1.5), bd.DT_STARTUP),
            ("alone", summary(2.0), None)]
    lines = bd.format_table(rows).splitlines()
    assert lines[0].startswith("| run |") and lines[1].startswith("|---|")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [c[-2] for c in cells] == ["1.00x", "10.00x", "1.00x", "4.00x", "-"]
    assert [c[-1] for c in cells] == [c[-2] for c in cells]  # cpu = wall in these summaries
    assert cells[1][:4] == ["ours, resiliparse", "8", "2", "4.00"]
    cpu_rows = [("datatrove", summary(40.0, 36.0), "datatrove"), ("ours", summary(5.0, 3.0), "datatrove")]
    last = [c.strip() for c in bd.format_table(cpu_rows).splitlines()[-1].strip("|").split("|")]
    assert last[-2:] == ["8.00x", "12.00x"]


def test_run_pinned_measures_the_child_on_one_core(tmp_path):
    core = sorted(os.sched_getaffinity(0))[-1]
    out = tmp_path / "affinity.txt"
    code = (f"import os\nopen({str(out)!r}, 'w').write(repr(sorted(os.sched_getaffinity(0))))\n"
            "x = 0\nfor i in range(3_000_000): x += i\n")
    r = bd.run_pinned([sys.executable, "-c", code], core, log=tmp_path / "log.txt")
    assert out.read_text() == repr([core])
    assert 0 < r["cpu"] <= r["wall"] * 1.05 + 0.05
    assert r["rss_mb"] > 1
    with pytest.raises(SystemExit, match="exit code 3"):
        bd.run_pinned([sys.executable, "-c", "raise SystemExit(3)"], core, log=tmp_path / "log2.txt")

"""Named sources in a refinement run (issue #15): ``refinery run P --input NAME=PATH ...`` gives every
document a ``source_name`` and the report a funnel per source whose accounting holds and adds up to the
total; plain inputs keep the old columns (their bytes are pinned by tests/e2e/test_golden.py)."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pytest

from pipeline.cli import main as refinery
from pipeline.report import AccountingError, check_report
from pipeline.run import split_named_inputs


def _rows(folder):
    tables = [pa.ipc.open_file(pa.memory_map(str(p), "r")).read_all() for p in sorted(folder.glob("*.arrow"))]
    return pa.concat_tables(tables) if tables else None


@pytest.fixture(scope="module")
def named_run(shared_data, tmp_path_factory):
    warc = shared_data / "warc"
    out = tmp_path_factory.mktemp("named") / "run"
    assert refinery(["run", "refinedweb_fast", "--input", f"web={warc / 'cc-main-2020-34-excerpt.warc.gz'}",
                     "--input", f"crawl={warc / 'wget-crawl-0000.warc.gz'}", str(warc / "wget-crawl-0001.warc.gz"),
                     "--output", str(out), "--no-funnel"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_every_source_has_its_funnel_and_the_funnels_add_up(named_run):
    out, report = named_run
    sources = report["sources"]
    assert set(sources) == {"web", "crawl"}
    check_report(report)  # also checks each source and the sums, stage by stage and reason by reason
    for key in ("input_documents", "output_documents", "rejected_documents"):
        assert sum(s[key] for s in sources.values()) == report[key]
    assert all(s["input_documents"] > 0 for s in sources.values())
    assert [st["name"] for st in sources["web"]["stages"]] == [st["name"] for st in report["stages"]]
    broken = json.loads(json.dumps(report))
    broken["sources"]["web"]["stages"][2]["kept"] += 1
    broken["sources"]["web"]["stages"][2]["rejected"] = {}
    with pytest.raises(AccountingError):
        check_report(broken)


def test_shards_carry_the_source_name_and_match_the_per_source_counts(named_run):
    out, report = named_run
    docs, rejected = _rows(out / "documents"), _rows(out / "rejected")
    from pipeline.document import CORE_FIELDS

    assert docs.schema.names.index("source_name") == len(CORE_FIELDS)  # right after the core columns
    kept = Counter(docs.column("source_name").to_pylist())
    assert kept == Counter({n: s["output_documents"] for n, s in report["sources"].items() if s["output_documents"]})
    dropped = Counter(rejected.column("source_name").to_pylist())
    assert dropped == Counter({n: s["rejected_documents"] for n, s in report["sources"].items() if s["rejected_documents"]})
    assert None not in kept and None not in dropped


def test_plain_inputs_have_no_source_column_and_mixed_naming_is_refused(shared_data, tmp_path, capsys):
    warc = shared_data / "warc"
    out = tmp_path / "plain"
    assert refinery(["run", "rw_raw", "--input", str(warc / "example-com.warc.gz"), "--output", str(out),
                     "--no-funnel"]) == 0
    assert "source_name" not in _rows(out / "documents").schema.names
    assert "sources" not in json.loads((out / "report.json").read_text())
    assert refinery(["run", "rw_raw", "--input", str(warc / "example-com.warc.gz"), f"web={warc / 'example-com.warc.gz'}",
                     "--output", str(tmp_path / "x")]) == 2
    assert "name every input or none" in capsys.readouterr().err


def test_split_named_inputs():
    assert split_named_inputs(["a.warc", "b.warc"]) == (["a.warc", "b.warc"], None)
    assert split_named_inputs(["web=a.warc", "b.warc", "wiki=w.jsonl"]) == ([], {"web": ["a.warc", "b.warc"],
                                                                               "wiki": ["w.jsonl"]})
    assert split_named_inputs(["https://x.org/a?b=c"]) == (["https://x.org/a?b=c"], None)


def test_html_report_shows_the_funnel_of_every_source(named_run, tmp_path):
    from pipeline.html_report import render

    out, report = named_run
    page = open(render(str(out), str(tmp_path / "page"))).read()
    assert "Per source" in page
    for name, sub in report["sources"].items():
        assert f"<h4>{name}: {sub['input_documents']:,} in, {sub['output_documents']:,} kept</h4>" in page

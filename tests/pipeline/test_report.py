"""Funnel report: counters -> report.json shape, invariants, double entry against the manifest."""

import pytest

from pipeline.report import AccountingError, build_report, check_report, cross_check_manifest, draw_funnel


def _counters():
    return {
        "read|in": 100, "read|kept": 95, "read|rejected|read:non_html": 5,
        "extract|in": 95, "extract|kept": 90, "extract|rejected|extract:empty": 5,
        "langid|in": 90, "langid|kept": 40, "langid|rejected|langid:language": 45, "langid|rejected|langid:low_score": 5,
    }


def test_report_shape_and_invariants(tmp_path):
    report = build_report("p", ["extract", "langid"], _counters())
    assert report["input_documents"] == 100 and report["output_documents"] == 40
    assert [s["name"] for s in report["stages"]] == ["read", "extract", "langid"]
    assert report["stages"][2]["rejected"] == {"langid:language": 45, "langid:low_score": 5}
    check_report(report)
    assert report["stages"][2]["kept_of_input_pct"] == 40.0
    png = draw_funnel(report, str(tmp_path / "funnel.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_lost_document_is_detected():
    c = _counters()
    c["langid|kept"] = 39  # one document vanished
    with pytest.raises(AccountingError, match="langid"):
        check_report(build_report("p", ["extract", "langid"], c))
    c = _counters()
    c["langid|in"] = 91  # one document counted twice between stages
    c["langid|kept"] = 41
    with pytest.raises(AccountingError, match="previous stage"):
        check_report(build_report("p", ["extract", "langid"], c))


def test_manifest_cross_check():
    report = build_report("p", ["extract", "langid"], _counters())
    ok = {"documents": [{"rows": 30}, {"rows": 10}], "rejected": [{"rows": 60}]}
    assert cross_check_manifest(report, ok) == {"documents_rows": 40, "rejected_rows": 60}
    with pytest.raises(AccountingError):
        cross_check_manifest(report, {"documents": [{"rows": 39}], "rejected": [{"rows": 60}]})

"""``refinery report OUT/`` on a real small run: the page, its pictures, and that documents cannot inject HTML.

The run (module fixture): ``refinery run rw_filtered`` on the article benchmark's WARC plus a small JSONL of
hostile documents (text holding ``<script>``, a ``javascript:`` URL, markup in a URL) that the filters reject,
so that they appear among the rejected samples the page shows.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.cli import main as refinery
from pipeline.html_report import render, signal_columns_for_reason, threshold_signals
from pipeline.paths import require_shared

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRIPT = '<script>alert("pwned")</script>'
HOSTILE = [
    # too short for gopher_quality (min_words) and for a confident language ID: rejected with its text
    {"id": "hostile-script", "url": "https://example.org/xss?q=<b>bold</b>",
     "text": f"Click here {SCRIPT} now <img src=x onerror=alert(2)> & more"},
    {"id": "hostile-js-url", "url": "javascript:alert(1)",
     "text": "Kurzer deutscher Text ohne viel Inhalt, der sicher nicht englisch ist."},
]


class _Page(HTMLParser):
    """Collects what a browser would act on: img sources, link targets, script tags, details summaries."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.scripts, self.tables, self.summaries = [], [], 0, 0, []
        self._in_summary = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src"))
        elif tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        elif tag == "script":
            self.scripts += 1
        elif tag == "table":
            self.tables += 1
        elif tag == "summary":
            self._in_summary = True
            self.summaries.append("")

    def handle_endtag(self, tag):
        if tag == "summary":
            self._in_summary = False

    def handle_data(self, data):
        if self._in_summary:
            self.summaries[-1] += data


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("html-report")
    hostile = base / "hostile.jsonl"
    hostile.write_text("".join(json.dumps(d) + "\n" for d in HOSTILE), encoding="utf-8")
    out = base / "out"
    assert refinery(["run", "rw_filtered", "--input", str(require_shared("warc", "news-articles-aeb.warc.gz")),
                     str(hostile), "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def page(run_dir):
    assert refinery(["report", str(run_dir), "--samples", "30"]) == 0  # enough to show every hostile document
    index = run_dir / "report" / "index.html"
    text = index.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(text)
    return index, text, parsed


def test_page_holds_the_funnel_table(run_dir, page):
    _, text, parsed = page
    report = json.loads((run_dir / "report.json").read_text())
    assert parsed.tables >= 1
    for stage in report["stages"]:
        row = re.search(rf"<tr><td class=l>{stage['name']}</td><td>{stage['in']:,}</td><td>{stage['kept']:,}</td>", text)
        assert row, f"funnel row of {stage['name']} missing"
        for reason, n in stage["rejected"].items():
            assert f"{reason}: {n:,}" in text
    assert "47.51%" in text  # RefinedWeb's langid figure beside ours
    assert f"<b>{report['output_documents']:,} documents kept</b>" in text


def test_pictures_exist_and_are_pngs(page):
    index, _, parsed = page
    assert {"funnel.png", "thresholds.png", "languages_rejected.png", "domains.png"} <= set(parsed.images)
    for src in parsed.images:
        data = (index.parent / src).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5_000, src


def test_documents_cannot_inject_html(page):
    _, text, parsed = page
    assert parsed.scripts == 0, "a <script> element reached the page"
    assert SCRIPT not in text and "<img src=x" not in text and "<b>bold</b>" not in text
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in text  # shown, escaped
    assert "javascript:alert(1)" in text  # the URL is shown ...
    assert not [h for h in parsed.links if not h.lower().startswith(("http://", "https://", "#"))]  # ... never linked
    assert all(src and "/" not in src for src in parsed.images)  # only the page's own pictures


def test_rejected_samples_show_reason_and_deciding_values(run_dir, page):
    _, text, parsed = page
    report = json.loads((run_dir / "report.json").read_text())
    reasons = [r for s in report["stages"] for r in s["rejected"]]
    assert len(parsed.summaries) == len(reasons)
    for reason, summary in zip(reasons, parsed.summaries):  # one block per reason, in pipeline order
        assert summary.startswith(reason)
    if "gopher_quality:min_words" in reasons:
        assert re.search(r"gopher_words = \d+ <span class=muted>\(min 50 ✗", text)
    assert re.search(r"language = \w+; language_score = [\d.]+", text)


def test_thresholds_come_from_the_run_manifest(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    params = {s["name"]: s["params"] for s in manifest["stages"]}
    columns = ["gopher_words", "gopher_dup_line_frac", "language_score", "lc_removed_fraction",
               "gopher_mean_word_length", "gopher_top_2gram_frac"]
    found = {(t.stage, t.param): t for t in threshold_signals(manifest, columns)}
    words = found[("gopher_quality", "min_words")]
    assert (words.column, words.bound, words.value) == ("gopher_words", "min", params["gopher_quality"]["min_words"])
    assert found[("gopher_quality", "max_words")].bound == "max"
    assert found[("gopher_repetition", "dup_line_frac")].column == "gopher_dup_line_frac"
    lid = found[("langid", "threshold")]
    assert (lid.column, lid.bound, lid.value) == ("language_score", "min", params["langid"]["threshold"])
    assert found[("line_corrections", "max_removed_fraction")].column == "lc_removed_fraction"
    assert {t.column for t in found.values()} <= set(columns)  # nothing invented
    thresholds = list(found.values())
    assert signal_columns_for_reason("gopher_quality:min_words", thresholds, columns)[0] == "gopher_words"
    assert signal_columns_for_reason("gopher_repetition:top_2gram", thresholds, columns)[0] == "gopher_top_2gram_frac"
    assert "language_score" in signal_columns_for_reason("langid:low_score", thresholds, columns)


def test_a_run_without_manifest_still_renders(run_dir, tmp_path):
    copy = tmp_path / "old-run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("report", "manifest.json"))
    index = Path(render(str(copy), str(tmp_path / "page"), samples=1))
    text = index.read_text(encoding="utf-8")
    assert "No thresholded signal found" in text
    assert (tmp_path / "page" / "funnel.png").read_bytes()[:8] == PNG_MAGIC
    assert not (copy / "report").exists()  # --out elsewhere leaves the run folder alone

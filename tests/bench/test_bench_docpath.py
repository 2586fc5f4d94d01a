"""bench_docpath measures what it says: the batch-size runs are the CLI run with only ``STAGE_BATCH_DOCS``
changed (set when the CLI imports ``pipeline.beam``, after its own local-run Beam import), and the inflate-only
piece inflates every gzip member of an archive."""

from __future__ import annotations

import gzip
import subprocess
import sys

from bench import bench_docpath


def test_batch_size_runs_set_the_batch_size_when_the_cli_imports_beam():
    # `refinery pipelines` never imports pipeline.beam: the hook waits; importing it afterwards sets the size
    code = bench_docpath._WITH_BATCH.format(batch=3, argv=["refinery", "pipelines"])
    code = code.replace("sys.exit(main())", "main()\nprint('pipeline.beam' in sys.modules)\n"
                                            "import pipeline.beam as b\nprint(b.STAGE_BATCH_DOCS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(bench_docpath.REPO)).stdout.split()
    assert out[-2:] == ["False", "3"]
    from pipeline import beam

    assert beam.STAGE_BATCH_DOCS != 3  # the default is not what the hook set


def test_inflate_only_reads_every_member(tmp_path, shared_data):
    path = shared_data / "warc" / "cc-main-2020-34-excerpt.warc.gz"
    assert bench_docpath._inflate_only([str(path)]) > 0
    from pipeline.io.dialects import WARC
    from pipeline.io.gzip_members import GzipMembers, RawWindow

    with open(path, "rb") as fh:
        data = b"".join(ev[1] for ev in GzipMembers(RawWindow(fh), WARC.starts_record).events() if ev[0] == "data")
    assert data == gzip.decompress(path.read_bytes())

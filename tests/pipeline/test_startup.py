"""Start-up of `refinery run` without changing what it computes: only the stage modules a pipeline names are
imported, pipelines.yaml parses to the same values with libyaml, funnel.png is a valid PNG of Pillow's pixels,
a program run tunes the garbage collector (a library call does not), and ftfy is imported for the first text
that needs it."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


_NAMED = """
    import sys, json
    from pipeline.config import get_pipeline
    spec = get_pipeline("rw_filtered", overrides=["extract.extractor=webrefinery"])
    loaded = sorted(m for m in sys.modules if m.startswith("pipeline.") and m.rsplit(".", 1)[-1] in ("stage", "stages")
                    or m.startswith("pipeline.stages.") or m.startswith("pipeline.quality") or m.startswith("pipeline.dedup"))
    from pipeline.stages import load_all
    full = load_all()
    same = all(full[s.name] is s.cls for s in spec.stages)
    print(json.dumps([[s.name for s in spec.stages], loaded, same, len(full)]))
"""


def test_a_run_imports_only_the_stage_modules_its_pipeline_names():
    names, loaded, same, n_all = json.loads(_python(_NAMED))
    assert names == ["url_filter", "extract", "langid", "gopher_repetition", "gopher_quality", "line_corrections",
                     "normalize"]
    assert {f"pipeline.stages.{n}" for n in names} <= set(loaded)
    skipped = ("pipeline.dedup", "pipeline.quality", "pipeline.tokenize", "pipeline.stages.c4_filters",
               "pipeline.stages.fineweb_filters")
    assert not [m for m in loaded if m.startswith(skipped)], loaded
    assert same and n_all > len(names)  # the classes are the ones load_all registers


def test_an_unknown_stage_still_lists_every_stage(tmp_path):
    from pipeline.config import ConfigError, get_pipeline
    from pipeline.stages import STAGES, load_named

    config = tmp_path / "p.yaml"
    config.write_text("pipelines:\n  p:\n    stages: [url_filter, minhash_dedupe]\n")
    with pytest.raises(ConfigError, match="did you mean 'minhash_dedup'.*available: .*c4_") as err:
        get_pipeline("p", config)
    assert "quality_classifier" in str(err.value)  # load_all ran: every stage module is in the list
    assert load_named(["url_filter", "no_such_stage"]) is STAGES and "minhash_dedup" in STAGES


def test_the_pipelines_file_parses_to_the_same_values_with_libyaml():
    from pipeline.config import DEFAULT_CONFIG, _safe_load

    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    assert _safe_load(text) == yaml.safe_load(text)
    bad = "a: [1, 2\nb: 3\n"
    with pytest.raises(yaml.YAMLError) as fast:
        _safe_load(bad)
    with pytest.raises(yaml.YAMLError) as plain:
        yaml.safe_load(bad)
    assert str(fast.value) == str(plain.value)  # the error a user sees is the pure-Python parser's


def test_png_bytes_is_a_png_of_exactly_those_pixels():
    from PIL import Image

    from pipeline.report import png_bytes

    width, height = 7, 5
    pixels = bytes((x * 37 + y * 11 + c * 5) % 256 for y in range(height) for x in range(width) for c in range(3))
    data = png_bytes((width, height), pixels)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import io

    img = Image.open(io.BytesIO(data))
    img.load()  # Pillow checks every chunk's CRC and the zlib stream
    assert img.size == (width, height) and img.mode == "RGB" and img.tobytes() == pixels
    with pytest.raises(ValueError, match="RGB pixels"):
        png_bytes((width, height), pixels[:-1])
    # one IDAT holding the rows, each behind filter byte 0
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8:start - 4], "big")
    rows = zlib.decompress(data[start:start + length])
    assert len(rows) == height * (1 + 3 * width) and rows[::1 + 3 * width] == b"\x00" * height


def test_the_funnel_is_drawn_at_its_size_with_its_labels(tmp_path):
    from PIL import Image

    from pipeline.report import build_report, draw_funnel

    counters = {"read|in": 10, "read|kept": 10, "extract|in": 10, "extract|kept": 4, "extract|rejected|empty": 6}
    report = build_report("p", ["extract"], counters)
    img = Image.open(draw_funnel(report, str(tmp_path / "funnel.png")))
    img.load()
    assert img.size == (int(110 * 7), 506) and img.mode == "RGB"
    colours = {c for _, c in img.getcolors(1 << 20)}
    assert (0x2B, 0x6C, 0xB0) in colours and (0xFF, 0xFF, 0xFF) in colours  # this run's bars on white
    assert len(colours) > 20  # anti-aliased text, not only flat fills


def test_a_program_run_freezes_the_start_up_objects_and_a_library_call_does_not():
    from pipeline import cli

    if gc.get_freeze_count():
        pytest.skip("another test froze objects already")  # pragma: no cover
    with cli._quiet_gc_while_importing(False):
        assert gc.isenabled()
    cli._no_gc_on_exit(False)
    assert gc.get_freeze_count() == 0
    try:
        with cli._quiet_gc_while_importing(True):
            assert not gc.isenabled()
            keep = [[] for _ in range(100)]
        assert gc.isenabled() and gc.get_freeze_count() >= len(keep)
    finally:
        gc.unfreeze()
        gc.enable()


_PROGRAM = """
    import gc, sys, json
    from pipeline import cli
    seen = []
    real = cli._cmd_run
    def spy(args, beam_args, as_program=False):
        seen.append(as_program)
        return 0
    cli._cmd_run = spy
    sys.argv = ["refinery", "run", "rw_filtered", "--output", "/tmp/x"]
    cli.main()
    cli.main(["run", "rw_filtered", "--output", "/tmp/x"])
    print(json.dumps(seen))
"""


def test_only_main_reading_sys_argv_counts_as_the_program():
    assert json.loads(_python(_PROGRAM)) == [True, False]


_FTFY = """
    import sys, json
    from pipeline.stages.normalize import Normalize, NormalizeParams
    stage = Normalize(NormalizeParams())
    stage.setup()
    after_setup = "ftfy" in sys.modules
    plain = stage.normalize_text("plain ASCII text")
    after_plain = "ftfy" in sys.modules
    fixed = stage.normalize_text("doesn\\u00e2\\u20ac\\u2122t")
    print(json.dumps([after_setup, after_plain, "ftfy" in sys.modules, plain, fixed]))
"""


def test_ftfy_is_imported_for_the_first_text_that_needs_it():
    after_setup, after_plain, after_fix, plain, fixed = json.loads(_python(_FTFY))
    assert (after_setup, after_plain, after_fix) == (False, False, True)
    assert plain == ["plain ASCII text", False] and fixed == ["doesn\u2019t", True]

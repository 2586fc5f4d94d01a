"""pipelines.yaml loading: every pipeline validates, and typos give messages that name what is wrong."""

import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.config import ConfigError, get_pipeline, load_config, parse_override


def _write(tmp_path, body: str):
    path = tmp_path / "pipelines.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_every_shipped_pipeline_validates():
    names = list(load_config()["pipelines"])
    assert {"refinedweb", "rw_raw", "rw_filtered", "fineweb"} <= set(names)
    for name in names:
        spec = get_pipeline(name)
        assert spec.stages, name
    rw = [s.name for s in get_pipeline("refinedweb").stages]
    assert rw[:7] == ["url_filter", "extract", "langid", "gopher_repetition", "gopher_quality", "line_corrections", "normalize"]
    assert "minhash_dedup" in rw


def test_paper_defaults_in_refinedweb():
    spec = {s.name: s.params for s in get_pipeline("refinedweb").stages}
    assert spec["langid"].threshold == 0.65
    assert list(spec["langid"].languages) == ["en"]
    assert spec["line_corrections"].max_removed_fraction == 0.05


def test_unknown_key_names_pipeline_stage_and_key(tmp_path):
    path = _write(tmp_path, """
        pipelines:
          mine:
            stages:
              - langid: {treshold: 0.5}
    """)
    with pytest.raises(ConfigError) as err:
        get_pipeline("mine", path)
    msg = str(err.value)
    assert "pipeline 'mine'" in msg and "stage 'langid'" in msg and "'treshold'" in msg
    assert "did you mean 'threshold'" in msg


def test_unknown_stage_and_pipeline(tmp_path):
    path = _write(tmp_path, """
        pipelines:
          mine:
            stages: [extract, langidd]
    """)
    with pytest.raises(ConfigError, match=r"stage 'langidd'.*did you mean 'langid'"):
        get_pipeline("mine", path)
    with pytest.raises(ConfigError, match=r"no pipeline named 'other'"):
        get_pipeline("other", path)


def test_out_of_range_and_wrong_type(tmp_path):
    path = _write(tmp_path, """
        pipelines:
          a:
            stages:
              - langid: {threshold: 1.5}
          b:
            stages:
              - langid: {threshold: high}
          c:
            stages: [extract]
            output: {num_shards: 0}
    """)
    with pytest.raises(ConfigError, match=r"pipeline 'a', stage 'langid'.*threshold"):
        get_pipeline("a", path)
    with pytest.raises(ConfigError, match=r"'threshold' = 'high' has the wrong type"):
        get_pipeline("b", path)
    with pytest.raises(ConfigError, match=r"num_shards"):
        get_pipeline("c", path)


def test_broken_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "pipelines.yaml"
    path.write_text("pipelines:\n  a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_set_overrides_are_validated():
    spec = get_pipeline("rw_raw", overrides=["langid.threshold=0.5", "langid.languages=[en, de]"])
    params = {s.name: s.params for s in spec.stages}
    assert params["langid"].threshold == 0.5 and list(params["langid"].languages) == ["en", "de"]
    with pytest.raises(ConfigError, match="has no stage 'gopher'"):
        get_pipeline("rw_raw", overrides=["gopher.x=1"])
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        get_pipeline("rw_raw", overrides=["langid.nope=1"])
    with pytest.raises(ConfigError, match="STAGE.KEY=VALUE"):
        parse_override("threshold")


def test_cli_prints_config_error_without_traceback(tmp_path):
    path = _write(tmp_path, """
        pipelines:
          mine:
            stages:
              - langid: {treshold: 0.5}
    """)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "mine", "--config", str(path), "--input", str(path), "--output", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown key 'treshold'" in proc.stderr


def test_cli_refuses_multi_threading(tmp_path, shared_data):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "rw_raw", "--input", str(shared_data / "warc" / "example-com.warc.gz"),
         "--output", str(tmp_path / "o"), "--direct_running_mode=multi_threading"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "multi_threading is refused" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_workers_flag_maps_to_multi_processing_and_refuses_clashes():
    from pipeline.beam import RunnerOptionError
    from pipeline.cli import workers_beam_args

    assert workers_beam_args(None, ["--x=1"]) == ["--x=1"]
    assert workers_beam_args(1, []) == []
    assert workers_beam_args(3, []) == ["--direct_num_workers", "3", "--direct_running_mode", "multi_processing"]
    all_cpus = workers_beam_args(0, [])
    assert all_cpus == ([] if (os.cpu_count() or 1) == 1 else
                        ["--direct_num_workers", str(os.cpu_count()), "--direct_running_mode", "multi_processing"])
    for clash in (["--runner", "DataflowRunner"], ["--direct_num_workers=2"], ["--direct_running_mode", "in_memory"]):
        with pytest.raises(RunnerOptionError, match="cannot be combined"):
            workers_beam_args(2, clash)
    with pytest.raises(RunnerOptionError, match=">= 0"):
        workers_beam_args(-1, [])


def test_cli_run_with_two_workers_matches_one(tmp_path, shared_data):
    inputs = [str(shared_data / "warc" / "example-com.warc.gz"), str(shared_data / "cc" / "ccnet-head-en-0091.jsonl.gz")]
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"w{n}"
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "rw_raw", "--input", *inputs, "--output", str(out),
                               "--workers", str(n), "--no-funnel"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[n] = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.arrow"))}
    assert outs[1] == outs[2] and len(outs[1]) > 2

"""Smoke test of the fuzz targets in fuzz/: each runs briefly in a subprocess and must end cleanly.

For each target (``fuzz_warc.py``: the archive reader; ``fuzz_stages.py``: the document stages):

- the default mode (atheris, coverage-guided, when installed; the fallback loop otherwise) runs a fixed
  number of inputs: exit status 0, libFuzzer's ``Done N runs`` with N large enough, no crash file, and
  with atheris, coverage that grew past the seeds;
- the fallback random-mutation mode (``--no-atheris``) does the same;
- in-process: the seeds pass ``check_one_input``, and a planted fault (a reader or stage that misbehaves)
  makes ``check_one_input`` fail, so the targets' assertions can catch something.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from pipeline.paths import REPO

FUZZ = REPO / "fuzz"
TARGETS = {"fuzz_warc": 10000, "fuzz_stages": 1500}  # inputs per run (several seconds each)


def load_target(name: str):
    spec = importlib.util.spec_from_file_location(name, FUZZ / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def atheris_installed() -> bool:
    return importlib.util.find_spec("atheris") is not None


def run_target(name: str, tmp_path, *extra: str) -> str:
    """Run ``fuzz/<name>.py`` with a fixed seed; assert a clean end; return its output."""
    runs = TARGETS[name]
    corpus = tmp_path / "corpus"
    args = [sys.executable, str(FUZZ / f"{name}.py"), *extra, f"-runs={runs}", "-seed=1", "-max_total_time=90",
            "-timeout=60", "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path}/", str(corpus)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(args, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    out = res.stdout + res.stderr
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-"))]
    assert res.returncode == 0 and not crashes, f"{name} found a failure ({crashes}):\n{out[-4000:]}"
    done = re.findall(r"Done (\d+) runs in (\d+) second", out)
    assert done, out[-3000:]
    n_runs = int(done[-1][0])
    assert n_runs >= min(runs, 200), f"{name} ran only {n_runs} inputs"
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_runs_cleanly_in_default_mode(name, tmp_path):
    out = run_target(name, tmp_path)
    if atheris_installed():
        assert "INFO: Using built-in libfuzzer" in out and "fallback" not in out
        init = re.search(r"INITED cov: (\d+)", out)
        final = re.findall(r"cov: (\d+)", out)
        assert init and int(init.group(1)) > 100  # the project's code is instrumented
        assert int(final[-1]) >= int(init.group(1))
        seeds = re.search(r"(\d+) files found in \S*webrefinery-" + name + r"-seeds", out)
        assert seeds and int(seeds.group(1)) >= 10
    else:
        assert "fallback random-mutation fuzzing" in out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_runs_cleanly_in_fallback_mode(name, tmp_path):
    out = run_target(name, tmp_path, "--no-atheris")
    assert "fallback random-mutation fuzzing" in out
    assert "Using built-in libfuzzer" not in out


@pytest.mark.timeout(120)
def test_warc_target_accepts_its_seeds_and_catches_a_planted_fault(monkeypatch):
    target = load_target("fuzz_warc")
    seeds = target.seed_inputs()
    assert len(seeds) >= 10
    for data in seeds:
        target.check_one_input(data)
    original = target.readers.iter_records
    assert sum(why is None for _, why in target.read_records("warc", seeds[0][1:])) >= 1

    def leaky(*args, **kwargs):  # a reader that invents a reason
        for doc, why in original(*args, **kwargs):
            yield doc, "read:invented"

    monkeypatch.setattr(target.readers, "iter_records", leaky)
    with pytest.raises(AssertionError):
        target.check_one_input(seeds[0])

    def oversized(*args, **kwargs):  # a reader that ignores max_bytes
        for doc, why in original(*args, **kwargs):
            if why is None:
                doc["html"] = "x" * (target.PARAMS.max_bytes + 1)
            yield doc, why

    monkeypatch.setattr(target.readers, "iter_records", oversized)
    with pytest.raises(AssertionError):
        target.check_one_input(seeds[0])


@pytest.mark.timeout(120)
def test_stages_target_accepts_its_seeds_and_catches_a_planted_fault(monkeypatch):
    target = load_target("fuzz_stages")
    seeds = target.seed_inputs()
    assert len(seeds) >= 30
    for data in seeds:
        target.check_one_input(data)
    stage = target.STAGES[seeds[0][0] % len(target.STAGES)]

    def broken(doc):
        raise RuntimeError("planted")

    monkeypatch.setattr(stage, "process", broken)
    with pytest.raises(AssertionError, match=":error:RuntimeError"):
        target.check_one_input(seeds[0])
    monkeypatch.undo()
    monkeypatch.setattr(target.NORMALIZE, "normalize_text", lambda text: (text + "x", False))
    with pytest.raises(AssertionError, match="idempotent"):
        target.check_one_input(seeds[0])

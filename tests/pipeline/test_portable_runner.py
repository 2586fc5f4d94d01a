"""The portable path: refinedweb and fineweb submitted to a Beam job service and run by a separate worker pool.

This is the way a Flink or Spark cluster (or Dataflow Runner v2) runs a job, on one machine:

- the **job service** is Beam's own (``python -m apache_beam.runners.portability.local_job_service_main``),
  started by the test as its own process in an empty folder; it receives the pipeline proto and the staged
  artifacts over the Job API (gRPC) and executes it, like Flink's or Spark's job server;
- the **workers** come from Beam's worker pool (``python -m apache_beam.runners.worker.worker_pool_main``),
  another process, in another empty folder, that starts one SDK harness process per worker
  (``--environment_type EXTERNAL --environment_config localhost:PORT``);
- the **worker's Python** knows nothing of the submitter: its ``PYTHONPATH`` is a folder where the project
  was installed with ``pip install --no-deps`` from a copy of ``pyproject.toml``, ``pipeline/`` and
  ``model/`` (exactly the Dockerfile's step), its ``PATH`` holds only a ``python`` that is this environment's
  interpreter (the image's Python with the pinned dependencies), its working folder is empty;
- an audit hook (``sitecustomize.py`` in that folder, so it runs in the pool and in every harness process
  and in the job service) logs every file opened or listed under the submitter's checkout (the repository,
  except the Python environment, which plays the worker image), every module loaded from the staged
  install, and the shared-data files (block lists) read by path.

The submitter is ``refinery run ... --runner PortableRunner --job_endpoint localhost:J --environment_type
EXTERNAL --environment_config localhost:W`` in the repository (docs/scale-out.md has the command).
Checked: the shards are byte-identical to the embedded runner's, report.json is identical (but for the
seconds it took): its accounting comes from the counters the job service returned (GetJobMetrics), and
``run_pipeline`` cross-checks them against the rows written; no process of the "cluster" read anything under
the submitter's checkout; the harness processes did load the project from the staged install.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Dict, List

import pytest

from pipeline.paths import REPO

# Small inputs (CI time), read in this order up to LIMIT records: 10 real CCNet "head" documents and a second
# copy of that file (so every page either pipeline keeps from it arrives twice and the dedup stages reject
# the copies), a real Common Crawl WARC excerpt (HTML, multilingual), then the first of the mixed web pages.
INPUTS = ["cc/ccnet-head-en-0091.jsonl.gz", "copy-of/cc/ccnet-head-en-0091.jsonl.gz",
          "warc/cc-main-2020-34-excerpt.warc.gz", "warc/web-pages-mixed.warc.gz"]
LIMIT = 80
PIPELINES = ("refinedweb", "fineweb")  # the paper's pipeline (4 dedup stages) and the MinHash-heavy FineWeb one
pytestmark = pytest.mark.slow  # still run in CI (pyproject's marker)

START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 900

SITECUSTOMIZE = textwrap.dedent(
    r'''
    """Test probe (tests/pipeline/test_portable_runner.py): log what this process reads under the submitter's checkout."""
    import os, sys

    def _install():
        log = os.environ.get("PORTABLE_PROBE_LOG")
        if not log:
            return
        sep = os.sep
        forbidden = os.path.realpath(os.environ["PORTABLE_PROBE_FORBIDDEN"]) + sep
        allowed = os.path.realpath(sys.prefix) + sep
        staged = os.path.realpath(os.path.dirname(os.path.abspath(__file__))) + sep
        data = os.path.realpath(os.environ["PORTABLE_PROBE_DATA"]) + sep
        role = os.environ.get("PORTABLE_PROBE_ROLE", "?")
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        events = {"open", "os.listdir", "os.scandir", "glob.glob", "os.chdir"}
        seen = set()

        def write(kind, event, path):
            os.write(fd, ("%s\t%d\t%s\t%s\t%s\n" % (role, os.getpid(), kind, event, path)).encode())

        def hook(event, args):
            if event not in events or not args:
                return
            path = args[0]
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            if not isinstance(path, str):
                return
            full = os.path.realpath(path) + sep
            if full.startswith(forbidden) and not full.startswith(allowed) and not full.startswith(staged):
                write("forbidden", event, full[:-1])
            elif full.startswith(staged + "pipeline" + sep) and "staged" not in seen:
                seen.add("staged")
                write("staged", event, full[:-1])
            elif full.startswith(data) and len(seen) < 20 and full not in seen:
                seen.add(full)
                write("data", event, full[:-1])

        sys.addaudithook(hook)

    _install()
    '''
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"process exited (rc={proc.returncode}):\n{log.read_text()[-4000:]}"
        try:
            with socket.create_connection(("localhost", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"nothing listens on port {port} after {timeout}s:\n{log.read_text()[-4000:]}")


def _stage_project(site: Path, work: Path) -> str:
    """Install the project into ``site`` as the worker image does (Dockerfile: pip install --no-deps of a copy).

    Returns how it was staged. Where this environment cannot build the project offline (no setuptools/wheel
    for ``--no-build-isolation``), the packages are copied instead, with a warning: still a separate copy
    that shares nothing with the checkout, but the package-data declaration goes untested."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    packages = [p for p in ("pipeline", "model") if (REPO / p).is_dir()]
    for package in packages:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=600, cwd=str(work),
    )
    how = "pip install --no-deps --target"
    if proc.returncode != 0:
        warnings.warn("could not pip-install the project copy offline; the worker gets a plain copy of the "
                      f"packages instead (package data untested):\n{proc.stderr[-2000:]}")
        shutil.rmtree(site, ignore_errors=True)
        for package in packages:
            shutil.copytree(src / package, site / package)
        how = "copy of the packages"
    assert (site / "pipeline" / "beam.py").is_file()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return how


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a process started with its own session, and every process it started (the SDK harnesses)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=20)
    else:
        try:  # the leader is gone; harness processes of its group may not be
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, shared_data):
    """A local job service and an external worker pool, each its own process with nothing of the submitter."""
    work = tmp_path_factory.mktemp("portable")
    site = work / "worker-site"
    staged_by = _stage_project(site, work)
    bin_dir = work / "worker-bin"  # the worker pool starts harnesses with a bare `python`
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (bin_dir / "python").chmod(0o755)
    probe_log = work / "probe.tsv"

    def env(role: str) -> Dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")}
        return {**keep, "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "PYTHONPATH": str(site),
                "PORTABLE_PROBE_LOG": str(probe_log), "PORTABLE_PROBE_FORBIDDEN": str(REPO),
                "PORTABLE_PROBE_DATA": str(shared_data), "PORTABLE_PROBE_ROLE": role, "PYTHONUNBUFFERED": "1"}

    procs: List[subprocess.Popen] = []
    try:
        js_dir, pool_dir = work / "job-service-cwd", work / "worker-pool-cwd"
        js_dir.mkdir()
        pool_dir.mkdir()
        port_file = work / "job-service.port"
        js_log = work / "job-service.log"
        js = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", "0",
             "--port_file", str(port_file), "--staging_dir", str(work / "staging")],
            cwd=str(js_dir), env=env("job-service"), stdout=js_log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        procs.append(js)
        pool_port = _free_port()
        pool_log = work / "worker-pool.log"
        pool = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port", str(pool_port)],
            cwd=str(pool_dir), env=env("worker"), stdout=pool_log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        procs.append(pool)
        deadline = time.time() + START_TIMEOUT_S
        while not port_file.exists():
            assert js.poll() is None, f"job service exited:\n{js_log.read_text()[-4000:]}"
            assert time.time() < deadline, f"job service did not start:\n{js_log.read_text()[-4000:]}"
            time.sleep(0.5)
        job_port = int(port_file.read_text())
        _wait_for_port(job_port, js, js_log)
        _wait_for_port(pool_port, pool, pool_log)
        yield {"job_endpoint": f"localhost:{job_port}", "worker_pool": f"localhost:{pool_port}", "work": work,
               "site": site, "staged_by": staged_by, "probe_log": probe_log, "pool_pid": pool.pid, "logs": [js_log, pool_log], "env": env}
    finally:
        for proc in procs:
            _kill_group(proc)


@pytest.fixture(scope="module")
def inputs(shared_data, tmp_path_factory) -> List[str]:
    copy = tmp_path_factory.mktemp("inputs")
    paths = []
    for rel in INPUTS:
        if rel.startswith("copy-of/"):
            source = shared_data / rel.split("/", 1)[1]
            target = copy / source.name
            shutil.copyfile(source, target)
            paths.append(str(target))
        else:
            paths.append(str(shared_data / rel))
    return paths


def _refinery_run(name: str, inputs: List[str], out: Path, data: Path, extra: List[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "WEBREFINERY_DATA": str(data), "REFINERY_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "pipeline.cli", "run", name, "--input", *inputs,
           "--output", str(out), "--limit", str(LIMIT), "--no-funnel", *extra]
    return subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def _outputs(out: Path) -> Dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.arrow"))}


def _report(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    report.pop("seconds", None)
    return report


def _probe(log: Path) -> List[List[str]]:
    return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []


def test_the_probe_sees_reads_of_the_checkout_and_the_staged_install(cluster, tmp_path):
    """The audit hook is not vacuous: a process with the workers' environment that opens a file of the
    checkout is logged as 'forbidden', and its ``import pipeline`` comes from the staged install (PYTHONPATH
    wins over the development environment's editable install, which points at the checkout)."""
    before = len(_probe(cluster["probe_log"]))
    target = REPO / "pipelines.yaml"
    script = f"open({str(target)!r}).read(); import pipeline.paths; print(pipeline.__file__)"
    proc = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=cluster["env"]("probe-check"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path(proc.stdout.strip()).resolve().is_relative_to(cluster["site"].resolve()), proc.stdout
    mine = [row for row in _probe(cluster["probe_log"])[before:] if row[0] == "probe-check"]
    assert any(row[2] == "forbidden" and row[4] == os.path.realpath(target) for row in mine), mine
    assert any(row[2] == "staged" for row in mine), mine


@pytest.mark.parametrize("name", PIPELINES)
def test_portable_runner_with_external_workers_matches_the_embedded_runner(cluster, inputs, shared_data, tmp_path, name):
    embedded, portable = tmp_path / "embedded", tmp_path / "portable"
    done = _refinery_run(name, inputs, embedded, shared_data, [])
    assert done.returncode == 0, done.stderr[-4000:]
    before = len(_probe(cluster["probe_log"]))
    started = time.time()
    done = _refinery_run(name, inputs, portable, shared_data, [
        "--runner", "PortableRunner", "--job_endpoint", cluster["job_endpoint"],
        "--environment_type", "EXTERNAL", "--environment_config", cluster["worker_pool"]])
    logs = "\n".join(p.read_text()[-3000:] for p in cluster["logs"])
    assert done.returncode == 0, f"{done.stderr[-6000:]}\n--- job service / worker pool logs:\n{logs}"
    print(f"{name}: portable run took {time.time() - started:.1f}s (worker install: {cluster['staged_by']})")

    # 1. the same bytes
    want, got = _outputs(embedded), _outputs(portable)
    assert len(want) >= 8 and sorted(got) == sorted(want)
    for path in want:
        assert got[path] == want[path], f"{name}: {path} differs between the embedded and the portable runner"

    # 2. the same accounting, counted by the workers and returned by the job service
    want_report, got_report = _report(embedded), _report(portable)
    assert got_report == want_report
    assert got_report["written"]["documents_rows"] == got_report["output_documents"] > 0  # double entry held
    dedup = [s for s in got_report["stages"] if s["name"].endswith("_dedup")]
    assert dedup and all(s["in"] > 0 for s in dedup), dedup
    assert sum(sum(s["rejected"].values()) for s in dedup) > 0, f"{name}: no dedup stage rejected anything here: {dedup}"

    # 3. the cluster read nothing of the submitter's checkout, and ran the staged install
    probe = _probe(cluster["probe_log"])[before:]
    forbidden = [row for row in probe if row[2] == "forbidden"]
    assert not forbidden, "the job service or a worker read the submitter's checkout:\n" + "\n".join("\t".join(r) for r in forbidden[:40])
    harness = [row for row in probe if row[0] == "worker" and row[1] != str(cluster["pool_pid"])]
    assert any(row[2] == "staged" for row in harness), f"no SDK harness loaded the staged project: {probe[:20]}"
    assert any(row[2] == "data" and "blocklists" in row[4] for row in harness), \
        f"no SDK harness read the block lists by path: {probe[:40]}"

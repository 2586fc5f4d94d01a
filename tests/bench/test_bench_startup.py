"""bench_startup's pieces run and measure what they say: each piece's code runs in a fresh interpreter, the
graph piece builds the same graph with and without the shortcuts, and the default base is the commit before
the graph-construction shortcuts."""

from __future__ import annotations

import subprocess
import sys

from bench import bench_startup


def test_our_pieces_run_and_cpu_time_is_the_childs(shared_data):
    labels = [label for label, _, _ in bench_startup.PIECES]
    assert len(labels) == len(set(labels))
    ours = [p for p in bench_startup.PIECES if any(w in p[0] for w in ("local run (", "pipeline.run", "graph", "langid", "Pillow"))]
    assert len(ours) == 6
    for label, code, extra in ours:
        env = bench_startup.env_for(bench_startup.REPO, {**extra, "WEBREFINERY_DATA": str(shared_data)})
        wall, cpu, status = bench_startup.timed([sys.executable, "-c", code], bench_startup.REPO, env)
        assert status == 0 and cpu > 0 and wall > 0, label
    # the child's CPU, not this process's: a busy loop of 0.3 s shows up as such
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    _, cpu, _ = bench_startup.timed([sys.executable, "-c", busy], bench_startup.REPO, bench_startup.env_for(bench_startup.REPO))
    assert 0.3 <= cpu < 3


def test_graph_piece_switches_the_shortcuts(shared_data):
    check = bench_startup.GRAPH + "\nfrom pipeline import beam_import\nprint(beam_import._installed)"
    for extra, want in ((bench_startup.SHORTCUTS_OFF, "False"), ({}, "True")):
        env = bench_startup.env_for(bench_startup.REPO, {**extra, "WEBREFINERY_DATA": str(shared_data)})
        out = subprocess.run([sys.executable, "-c", check], cwd=bench_startup.REPO, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split()[-1] == want


def test_default_base_is_before_the_shortcuts():
    base = bench_startup.default_base()
    text = subprocess.run(["git", "show", f"{base}:pipeline/beam_import.py"], cwd=bench_startup.REPO,
                          capture_output=True, text=True).stdout
    assert "def speed_up_graph_construction" not in text
    assert subprocess.run(["git", "rev-parse", "--verify", base], cwd=bench_startup.REPO,
                          capture_output=True).returncode == 0

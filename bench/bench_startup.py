"""Start-up of a `refinery run`: where the fixed cost of a one-record run goes, and the one-record run
before/after a change.

Every piece runs in a fresh interpreter (``python -c``), several rounds; the table shows medians of the
child's wall time and CPU time (user + sys, from ``os.wait4``: on a shared, loaded machine the CPU time
is the steadier figure). Pieces:

- the interpreter alone, ``import apache_beam`` (plain, and as a local run imports it:
  ``pipeline/beam_import.py``), the run's own modules (``pipeline.run``), the libraries
  the stages load in ``setup`` (trafilatura, resiliparse, ftfy, fastText and its lid.176 model), and two
  libraries a local run no longer imports (pandas, which pyarrow imported on the first ``pa.array`` of the
  shard writer, and IPython, which Beam imported to learn it is not in a notebook);
- building refinedweb_fast's graph and translating it to Beam's pipeline proto (what every run does before
  the first record), with Beam as it is (``WEBREFINERY_BEAM_SHORTCUTS=0``) and with the shortcuts of
  ``pipeline.beam_import.speed_up_graph_construction`` (signature memo, option-view cache, IPython probe);
- ``funnel.png``: matplotlib's renderer (import + draw, the one before the Pillow change) and the Pillow
  renderer (``pipeline.report.draw_funnel``: drawn at its size, written by ``png_bytes``);
- two libraries Beam imports that a local run now imports only on first use (beartype, httplib2) and ftfy,
  which the normalize stage imports for the first text that needs it;
- the whole one-record run (``refinery run PIPELINE --limit 1``, with ``--set`` overrides; rw_filtered with
  ``extract.extractor=webrefinery`` by default) for each ``--pipelines`` entry: on a ``git worktree`` of
  ``--base`` (default: the commit before the graph-construction shortcuts), created under /tmp by this script
  and removed afterwards; on this tree with the shortcuts off; on this tree called as a library
  (``main(argv)``: the garbage collector left as it is); on this tree.

Both trees' ``pipeline`` and ``model`` packages are byte-compiled first (``compileall``), as installing a
package does: this environment sets ``PYTHONDONTWRITEBYTECODE=1``, which otherwise makes every run compile
the project's ~100 modules from source again (~0.1 s; ``--no-compile`` leaves the caches as they are).

    .venv/bin/python bench/bench_startup.py --rounds 3            # rw_filtered and refinedweb_fast
    .venv/bin/python bench/bench_startup.py --rounds 3 --no-base  # this tree only
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
ONE_PAGE = "warc/cc-main-2024-22-one-page.warc.gz"

FUNNEL_REPORT = (
    "r = {'pipeline': 'rw_filtered', 'input_documents': 400, 'output_documents': 123, 'stages': ["
    "{'name': n, 'kept_of_input_pct': v} for n, v in [('read', 100.0), ('url_filter', 97.2), ('extract', 95.1),"
    " ('langid', 50.3), ('gopher_repetition', 40.0), ('gopher_quality', 33.3), ('line_corrections', 33.3),"
    " ('normalize', 33.3)]]}"
)
# The renderer before the change, as it was (matplotlib's Figure, no pyplot), for the comparison row.
MATPLOTLIB_FUNNEL = FUNNEL_REPORT + """
from matplotlib.figure import Figure
import io
fig = Figure(figsize=(10.4, 4.6), dpi=110)
ax = fig.subplots()
names = [s['name'] for s in r['stages']]; ours = [s['kept_of_input_pct'] for s in r['stages']]
bars = ax.bar([i - 0.2 for i in range(len(names))], ours, 0.4, color='#2b6cb0', label='this run')
for b, v in zip(bars, ours):
    ax.text(b.get_x() + b.get_width() / 2, v + 1, f'{v:.1f}', ha='center', va='bottom', fontsize=7)
ax.bar([i + 0.2 for i in range(len(names))], ours, 0.4, color='#dd6b20', alpha=0.8, label='paper')
ax.set_xticks(range(len(names))); ax.set_xticklabels(names, rotation=30, ha='right', fontsize=8)
ax.set_ylabel('% of input kept after stage'); ax.set_ylim(0, 110); ax.set_title('Funnel')
ax.legend(fontsize=8, loc='upper right'); ax.grid(axis='y', alpha=0.3); fig.tight_layout()
fig.savefig(io.BytesIO(), format='png')
"""
# Imported by a local run only when first used (beam_import.py; the normalize stage for ftfy).
IMPORTS_ON_FIRST_USE = (
    ("import beartype.door (local run: on first use)", "import beartype.door"),
    ("import httplib2 (local run: on first use)", "import httplib2"),
    ("import ftfy (normalize: on first mojibake)", "import ftfy"),
)
PILLOW_FUNNEL = FUNNEL_REPORT + """
import tempfile, os
from pipeline.report import draw_funnel
with tempfile.TemporaryDirectory() as d:
    draw_funnel(r, os.path.join(d, 'funnel.png'))
"""
GRAPH = """
from pipeline.beam_import import import_beam_for_local_run
import_beam_for_local_run(['/tmp/x'], [])
from pipeline import runtime
from pipeline.beam import RefineGraph
from pipeline.config import get_pipeline
spec = get_pipeline('refinedweb_fast')
p = runtime.new_pipeline(options=runtime.make_options([]))
p | 'Refine' >> RefineGraph(spec.build_stages(), ['/tmp/a.warc.gz'], '/tmp/out', spec.output, {}, spread=False)
p.to_runner_api()
"""
LANGID_MODEL = """
from pipeline.stages.langid import default_model_path, load_language_model
load_language_model(default_model_path())
"""

SHORTCUTS_OFF = {"WEBREFINERY_BEAM_SHORTCUTS": "0"}
PIECES: List[Tuple[str, str, Dict[str, str]]] = [
    ("interpreter (python -c pass)", "pass", {}),
    ("import apache_beam", "import apache_beam", {}),
    ("import apache_beam, local run (beam_import.py)",
     "from pipeline.beam_import import import_beam_for_local_run; import_beam_for_local_run(['/tmp/x'], [])", {}),
    ("import pipeline.run (config, stages, readers)", "import pipeline.run", {}),
    ("import trafilatura", "import trafilatura", {}),
    ("import resiliparse (html + extract)", "import resiliparse.parse.html, resiliparse.extract.html2text", {}),
    ("import pyarrow", "import pyarrow", {}),
    ("import pandas (no longer imported by a local run)", "import pandas", {}),
    ("import IPython (no longer imported by a local run)", "import IPython", {}),
    *[(label, code, {}) for label, code in IMPORTS_ON_FIRST_USE],
    ("langid setup (fastText + lid.176 model)", LANGID_MODEL, {}),
    ("refinedweb_fast graph + proto, Beam as it is", GRAPH, SHORTCUTS_OFF),
    ("refinedweb_fast graph + proto, shortcuts", GRAPH, {}),
    ("funnel.png, matplotlib (before)", MATPLOTLIB_FUNNEL, {}),
    ("funnel.png, Pillow at its size + png_bytes (now)", PILLOW_FUNNEL, {}),
]


def timed(cmd: Sequence[str], cwd: Path, env: Dict[str, str]) -> Tuple[float, float, int]:
    """(wall s, child CPU s, exit status) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), cwd=str(cwd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, code


def median_of(cmd: Sequence[str], cwd: Path, env: Dict[str, str], rounds: int) -> Tuple[float, float]:
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu, _ = timed(cmd, cwd, env)
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus)


def env_for(tree: Path, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ, **(extra or {}))
    env["PYTHONPATH"] = str(tree)  # ahead of the editable install's finder: this tree's `pipeline`
    env.setdefault("WEBREFINERY_DATA", str(REPO.parent / "shared" / "data"))
    return env


# --set overrides of the one-record runs per pipeline (the fast extractor, as bench_datatrove.py runs it)
DEFAULT_SETS = {"rw_filtered": ["extract.extractor=webrefinery"]}
AS_LIBRARY = "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


def run_cmd(pipeline: str, data: Path, out: Path, sets: Sequence[str] = (), as_library: bool = False) -> List[str]:
    """``refinery run`` as the program (``python -m pipeline.cli``) or as a library call (``main(argv)``)."""
    head = [sys.executable, "-c", AS_LIBRARY] if as_library else [sys.executable, "-m", "pipeline.cli"]
    return [*head, "run", pipeline, "--input", str(data / ONE_PAGE), "--output", str(out), "--limit", "1",
            "--force", *[a for s in sets for a in ("--set", s)]]


def byte_compile(tree: Path) -> None:
    """Write the bytecode caches of ``tree``'s own packages (what ``pip install`` does for an installed one)."""
    for package in ("pipeline", "model"):
        if (tree / package).is_dir():
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / package)], check=True,
                           stdout=subprocess.DEVNULL)


def default_base() -> str:
    """The parent of the commit that added the graph-construction shortcuts to pipeline/beam_import.py (HEAD
    while they are not committed yet)."""
    marker = "def speed_up_graph_construction"
    commits = subprocess.run(["git", "log", "--format=%H", "--", "pipeline/beam_import.py"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    oldest_with = None
    for commit in commits:  # newest first
        text = subprocess.run(["git", "show", f"{commit}:pipeline/beam_import.py"], cwd=REPO, capture_output=True,
                              text=True).stdout
        if marker not in text:
            break
        oldest_with = commit
    return f"{oldest_with}^" if oldest_with else "HEAD"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pipelines", nargs="+", default=["rw_filtered", "refinedweb_fast"])
    ap.add_argument("--base", default=None, help="git revision to compare the one-record run against")
    ap.add_argument("--no-base", action="store_true", help="measure this tree only")
    ap.add_argument("--set", dest="sets", action="append", default=None, metavar="STAGE.KEY=VALUE",
                    help="override for every one-record run (default: rw_filtered with extract.extractor=webrefinery)")
    ap.add_argument("--no-pieces", action="store_true", help="only the one-record runs")
    ap.add_argument("--no-compile", action="store_true", help="do not byte-compile the trees first")
    args = ap.parse_args()

    env = env_for(REPO)
    data = Path(env["WEBREFINERY_DATA"])
    if not (data / ONE_PAGE).exists():
        raise SystemExit(f"{data / ONE_PAGE} is missing: set WEBREFINERY_DATA to the shared data folder")
    if not args.no_compile:
        byte_compile(REPO)
    print(f"start-up pieces: fresh `python -c` each, {args.rounds} rounds, medians "
          f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"{'no byte-compiling' if args.no_compile else 'trees byte-compiled first'})")
    print(f"{'piece':48s} {'wall s':>8s} {'CPU s':>8s}")
    for label, code, extra in ([] if args.no_pieces else PIECES):
        wall, cpu = median_of([sys.executable, "-c", code], REPO, env_for(REPO, extra), args.rounds)
        print(f"{label:48s} {wall:8.2f} {cpu:8.2f}", flush=True)

    base = None if args.no_base else subprocess.run(
        ["git", "rev-parse", args.base or default_base()], cwd=REPO, capture_output=True, text=True,
        check=True).stdout.strip()
    trees: List[Tuple[str, Path, Dict[str, str]]] = [("this tree, shortcuts off", REPO, SHORTCUTS_OFF),
                                                     ("this tree, library call", REPO, {}),
                                                     ("this tree", REPO, {})]
    worktree = None
    if base:
        worktree = Path(tempfile.mkdtemp(prefix="bench-startup-base-"))
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), base], cwd=REPO, check=True,
                       capture_output=True)
        if not args.no_compile:
            byte_compile(worktree)
        trees.insert(0, (f"base {base[:12]}", worktree, {}))
    try:
        print(f"\none-record run (refinery run PIPELINE --limit 1 on {ONE_PAGE}), {args.rounds} rounds, medians")
        print(f"{'pipeline':18s} {'tree':26s} {'wall s':>8s} {'CPU s':>8s}")
        results: Dict[Tuple[str, str], Tuple[float, float]] = {}
        for pipeline in args.pipelines:
            sets = args.sets if args.sets is not None else DEFAULT_SETS.get(pipeline, [])
            if sets:
                print(f"{pipeline}: --set {' --set '.join(sets)}")
            for name, tree, extra in trees:
                with tempfile.TemporaryDirectory() as out:
                    cmd = run_cmd(pipeline, data, Path(out) / "run", sets, as_library=name.endswith("library call"))
                    try:
                        results[pipeline, name] = median_of(cmd, tree, env_for(tree, extra), args.rounds)
                    except RuntimeError as exc:  # e.g. an older base without the --set value
                        print(f"{pipeline:18s} {name:26s} failed: {str(exc).splitlines()[-1][:80]}", flush=True)
                        continue
                wall, cpu = results[pipeline, name]
                print(f"{pipeline:18s} {name:26s} {wall:8.2f} {cpu:8.2f}", flush=True)
            first, last = (pipeline, trees[0][0]), (pipeline, trees[-1][0])
            if first in results and last in results:
                (bw, bc), (nw, nc) = results[first], results[last]
                print(f"{pipeline:18s} {'now / ' + trees[0][0][:20]:26s} {nw / bw:8.2f} {nc / bc:8.2f}")
    finally:
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, capture_output=True)
            shutil.rmtree(worktree, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The one place where a Beam job of this project is configured, run and read back.

``refinery run`` (``pipeline.beam``), the in-memory dedup runner (``pipeline.dedup.local``) and the tokenizer
commands (``pipeline.tokenize``) all go through here:

- ``make_options(beam_args)``: ``PipelineOptions`` from raw Beam flags; ``--direct_running_mode=multi_threading``
  is refused (it was measured to lose records at GroupByKey).
- ``workers_args(workers, beam_args)``: the ``--workers N`` shorthand (``multi_processing`` on the embedded runner).
- ``make_runner(options)`` / ``new_pipeline(beam_args)``: without ``--runner`` (or with ``--runner FnApiRunner``)
  the embedded in-process ``FnApiRunner``; plain ``DirectRunner`` is never chosen for the user (it downloads
  Prism). Any other runner name (``PortableRunner``, ``FlinkRunner``, ``DataflowRunner`` ...) goes to Beam as given.
- ``single_worker(options)`` / ``runs_in_this_process(options)``: what the graph builder and progress bars
  need to know about where DoFns run.
- ``run_to_completion(p)``: run and block; a job that does not end DONE raises.
- ``query_counters(result, ns)`` / ``query_metrics(result, ns)``: the metrics a finished job returned.

``make_options`` and ``new_pipeline`` first install ``pipeline.beam_import.speed_up_graph_construction()``
(exact in-process shortcuts for building a graph: signatures, option views, the IPython probe).
"""

from __future__ import annotations

import contextlib
import gc
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipeline.beam_import import speed_up_graph_construction
from pipeline.errors import UserValueError

# Runner names that mean "the embedded in-process runner" (the default).
EMBEDDED_RUNNER_NAMES = (None, "", "FnApiRunner", "InProcess")
# Flags that ``--workers`` sets itself and so may not be combined with.
_WORKERS_FLAGS = ("--runner", "--direct_num_workers", "--direct_running_mode")


class RunnerOptionError(UserValueError):
    """A Beam option that this project refuses (with the reason)."""


def make_options(beam_args: Optional[Sequence[str]] = ()) -> PipelineOptions:
    """Pipeline options from Beam command-line flags, refusing known-bad settings."""
    speed_up_graph_construction()
    options = PipelineOptions(list(beam_args or ()))
    if options.view_as(DirectOptions).direct_running_mode == "multi_threading":
        raise RunnerOptionError(
            "--direct_running_mode=multi_threading is refused: it was measured to lose records at GroupByKey "
            "and to blow up memory. Use --direct_running_mode=multi_processing --direct_num_workers=N for more cores."
        )
    return options


def workers_args(workers: Optional[int], beam_args: Sequence[str] = ()) -> List[str]:
    """``beam_args`` plus the flags of ``--workers N``: N processes of the embedded runner (multi_processing).

    ``None`` and 1 add nothing; 0 means one per CPU. ``--workers`` cannot be combined with ``--runner`` or the
    direct-runner flags it sets itself."""
    args = list(beam_args)
    if workers is None:
        return args
    if workers < 0:
        raise RunnerOptionError(f"--workers must be >= 0 (0: one per CPU), got {workers}")
    clash = [a for a in args if a.split("=")[0] in _WORKERS_FLAGS]
    if clash:
        raise RunnerOptionError(f"--workers sets the embedded runner's processes; it cannot be combined with {clash[0].split('=')[0]} "
                                "(for Dataflow/Flink/Spark use their own worker options, e.g. --max_num_workers)")
    n = workers or os.cpu_count() or 1
    if n == 1:
        return args
    return args + ["--direct_num_workers", str(n), "--direct_running_mode", "multi_processing"]


def is_embedded(options: PipelineOptions) -> bool:
    """True when the options select the embedded FnApiRunner (no ``--runner``, or one of its names)."""
    return options.view_as(StandardOptions).runner in EMBEDDED_RUNNER_NAMES


def make_runner(options: PipelineOptions) -> Union[str, Any]:
    """The embedded default is Beam's in-process FnApiRunner; any other runner name is handed to Beam."""
    if is_embedded(options):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return options.view_as(StandardOptions).runner


def new_pipeline(beam_args: Optional[Sequence[str]] = (), options: Optional[PipelineOptions] = None) -> beam.Pipeline:
    """A Beam pipeline on the runner the arguments choose (``options`` already made win over ``beam_args``)."""
    speed_up_graph_construction()
    options = options if options is not None else make_options(beam_args)
    return beam.Pipeline(runner=make_runner(options), options=options)


def single_worker(options: PipelineOptions) -> bool:
    """True when the job runs on one embedded worker: spreading work over workers (Reshuffle) gains nothing."""
    return is_embedded(options) and options.view_as(DirectOptions).direct_num_workers == 1


def runs_in_this_process(options: PipelineOptions) -> bool:
    """True when DoFns run inside this process (then a progress bar drawn by a DoFn is visible)."""
    if not is_embedded(options):
        return False
    direct = options.view_as(DirectOptions)
    return (direct.direct_running_mode or "in_memory") == "in_memory" and (direct.direct_num_workers or 1) <= 1


# While an embedded run works in this process, the cyclic garbage collector's youngest generation is collected
# after this many net allocations instead of Python's 700: a dedup run keeps hundreds of thousands of records
# alive, and each young collection that cascades into a full one walks all of them again (``bench/bench_dedup.py``
# prints the collector's seconds; ``--default-gc`` runs without this setting). The garbage itself is the same; only when it is
# looked for changes (a few MB more may wait between collections).
RUN_GC_THRESHOLD0 = 50_000


@contextlib.contextmanager
def _fewer_collections(p: beam.Pipeline):
    """Raise the youngest generation's threshold to ``RUN_GC_THRESHOLD0`` while ``p`` runs in this process (the
    previous thresholds come back afterwards); other runners, and a caller with a higher threshold, as they are."""
    before = gc.get_threshold()
    if not runs_in_this_process(p.options) or before[0] == 0 or before[0] >= RUN_GC_THRESHOLD0:
        yield
        return
    gc.set_threshold(RUN_GC_THRESHOLD0, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def run_to_completion(p: beam.Pipeline):
    """Run ``p`` and block until it ends; raise unless it ended DONE (a remote job that failed or was cancelled)."""
    from apache_beam.runners.runner import PipelineState

    with _fewer_collections(p):
        result = p.run()
        state = result.wait_until_finish()
    if state is not None and state != PipelineState.DONE:
        raise RuntimeError(f"the Beam job ended in state {state}, not DONE")
    return result


def _value(metric) -> Any:
    try:
        value = metric.committed
    except Exception:  # some runners support only attempted metrics
        value = None
    return metric.attempted if value is None else value


def query_counters(result, namespace: str) -> Dict[str, int]:
    """Counters of a finished job in ``namespace`` as {name: value} (summed over steps)."""
    return query_metrics(result, namespace, distributions=False)


def query_metrics(result, namespace: str, distributions: bool = True) -> Dict[str, Any]:
    """Counters (as ints, summed over steps) and distributions (as {min, max, sum, count}) in ``namespace``."""
    metrics: Dict[str, Any] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(namespace))
    for c in query["counters"]:
        name = c.key.metric.name
        metrics[name] = metrics.get(name, 0) + int(_value(c) or 0)
    if distributions:
        for d in query["distributions"]:
            value = _value(d)
            if value is not None:
                metrics[d.key.metric.name] = {"min": value.min, "max": value.max, "sum": value.sum, "count": value.count}
    return metrics

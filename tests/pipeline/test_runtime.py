"""pipeline.runtime (options, runner choice, where DoFns run) and the graph's plan (pipeline.beam.plan_steps)."""

from __future__ import annotations

import apache_beam as beam
import pytest

from pipeline import runtime
from pipeline.beam import RefineGraph, plan_steps, spread_point
from pipeline.config import get_pipeline
from pipeline.errors import UserError


def test_multi_threading_is_refused_as_a_user_error():
    with pytest.raises(runtime.RunnerOptionError, match="multi_threading is refused") as err:
        runtime.make_options(["--direct_running_mode=multi_threading"])
    assert isinstance(err.value, UserError)
    runtime.make_options(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])  # allowed


def test_runner_choice():
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    for args in ([], ["--runner=FnApiRunner"], ["--runner", "InProcess"]):
        assert isinstance(runtime.make_runner(runtime.make_options(args)), FnApiRunner), args
    portable = runtime.make_options(["--runner=PortableRunner", "--job_endpoint=localhost:1"])
    assert runtime.make_runner(portable) == "PortableRunner"  # handed to Beam by name
    assert not runtime.is_embedded(portable) and not runtime.single_worker(portable)
    assert not runtime.runs_in_this_process(portable)


def test_where_dofns_run():
    one = runtime.make_options([])
    assert runtime.single_worker(one) and runtime.runs_in_this_process(one)
    two = runtime.make_options(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert not runtime.single_worker(two) and not runtime.runs_in_this_process(two)
    one_subprocess = runtime.make_options(["--direct_running_mode=multi_processing"])
    assert runtime.single_worker(one_subprocess) and not runtime.runs_in_this_process(one_subprocess)


def test_workers_flag():
    assert runtime.workers_args(None, ["--x=1"]) == ["--x=1"]
    assert runtime.workers_args(1, []) == []
    assert runtime.workers_args(2, ["--x=1"]) == ["--x=1", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    with pytest.raises(runtime.RunnerOptionError, match="cannot be combined"):
        runtime.workers_args(2, ["--runner=PortableRunner"])


def _names(step):
    return [s.name for s in step.stages]


def test_documents_are_spread_after_the_stage_that_declares_it(shared_data):
    stages = get_pipeline("refinedweb").build_stages()
    point = spread_point(stages)
    assert point is not None and point.name == "extract" and point.shrinks_documents
    steps = plan_steps(stages, spread=True)
    # url_filter+extract fused, then a Reshuffle, then the rest of the document stages fused, then the
    # consecutive exact/URL/MinHash dedup stages as one step (pipeline.dedup.fused), then substring dedup;
    # every stage exactly once, in order
    assert _names(steps[0]) == ["url_filter", "extract"] and steps[0].spread_after
    assert [n for step in steps for n in _names(step)] == [s.name for s in stages]
    assert sum(step.spread_after for step in steps) == 1
    assert [_names(step) for step in steps if step.collection] == [["exact_dedup", "url_dedup", "minhash_dedup"], ["substring_dedup"]]
    # a single worker: nothing spread, document stages fused up to the first collection stage
    local = plan_steps(stages, spread=False)
    assert not any(step.spread_after for step in local)
    assert _names(local[0]) == [s.name for s in stages if s.kind == "document"]


def _labels(stages, spread):
    spec = get_pipeline("refinedweb")
    p = beam.Pipeline(runner=runtime.make_runner(runtime.make_options([])))
    p | "Refine" >> RefineGraph(stages, ["in.warc.gz"], "/nonexistent-out", spec.output, {}, spread=spread)
    return [t.unique_name for t in p.to_runner_api().components.transforms.values()]


def test_without_a_declaring_stage_documents_are_spread_right_after_reading(shared_data):
    stages = [s for s in get_pipeline("refinedweb").build_stages() if s.name != "extract"]
    assert spread_point(stages) is None
    assert not any(step.spread_after for step in plan_steps(stages, spread=True))
    labels = _labels(stages, spread=True)
    assert "Refine/SpreadDocs" in labels and "Refine/SpreadFiles" in labels
    assert not any("SpreadDocs" in label or "SpreadFiles" in label for label in _labels(stages, spread=False))


_THRESHOLDS_SEEN = []


class _ThresholdProbe(beam.DoFn):
    """Records the collector's youngest-generation threshold while the run works (module level: by reference)."""

    def process(self, x):
        import gc

        _THRESHOLDS_SEEN.append(gc.get_threshold()[0])
        yield x


def test_an_embedded_run_collects_garbage_less_often_and_restores_the_thresholds():
    import gc

    seen, Probe = _THRESHOLDS_SEEN, _ThresholdProbe
    seen.clear()
    before = gc.get_threshold()
    p = runtime.new_pipeline([])
    _ = p | beam.Create([1, 2]) | beam.ParDo(Probe())
    runtime.run_to_completion(p)
    assert seen and set(seen) == {runtime.RUN_GC_THRESHOLD0}
    assert gc.get_threshold() == before
    # a caller that already collects less often keeps its own setting
    gc.set_threshold(10 * runtime.RUN_GC_THRESHOLD0, *before[1:])
    try:
        seen.clear()
        p = runtime.new_pipeline([])
        _ = p | beam.Create([1]) | beam.ParDo(Probe())
        runtime.run_to_completion(p)
        assert seen == [10 * runtime.RUN_GC_THRESHOLD0]
    finally:
        gc.set_threshold(*before)

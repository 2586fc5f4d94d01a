"""Beam runner set-up and progress bars for the tokenizer commands.

Without ``--runner`` in the Beam arguments, pipelines run on Beam's in-process ``FnApiRunner`` (never the
Prism-downloading DirectRunner, never ``multi_threading`` mode). Extra Beam options pass through
unchanged, e.g. ``--direct_num_workers=2 --direct_running_mode=multi_processing`` or
``--runner=DataflowRunner --project=...``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipeline.tokenize import UsageError


def pipeline_options(beam_args: Sequence[str] | None) -> PipelineOptions:
    """PipelineOptions from raw Beam arguments; refuses the mode known to drop records here."""
    options = PipelineOptions(list(beam_args or []))
    if options.view_as(DirectOptions).direct_running_mode == "multi_threading":  # refused: it loses records
        raise UsageError("--direct_running_mode=multi_threading is not supported (it drops records at "
                         "GroupByKey); use in_memory or multi_processing")
    return options


def make_pipeline(beam_args: Sequence[str] | None = None) -> beam.Pipeline:
    """A Beam pipeline: FnApiRunner in-process unless the arguments name a runner."""
    options = pipeline_options(beam_args)
    if options.view_as(StandardOptions).runner:
        return beam.Pipeline(options=options)
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return beam.Pipeline(runner=FnApiRunner(), options=options)


def runs_in_this_process(beam_args: Sequence[str] | None) -> bool:
    """True when DoFns run inside this process (then a progress bar drawn by a DoFn is visible)."""
    options = pipeline_options(beam_args)
    if options.view_as(StandardOptions).runner:
        return False
    direct = options.view_as(DirectOptions)
    return (direct.direct_running_mode or "in_memory") == "in_memory" and (direct.direct_num_workers or 1) <= 1


class DoFnProgress:
    """A tqdm bar owned by a DoFn instance (created lazily, only when a total was given)."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "batch") -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self._bar = None

    def update(self, n: int = 1) -> None:
        if self.total is None:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, leave=False)
        self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __getstate__(self):  # a live bar does not pickle; workers start without one
        state = dict(self.__dict__)
        state["_bar"] = None
        return state

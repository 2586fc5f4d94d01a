"""Beam pipelines and progress bars for the tokenizer commands (the runner set-up is ``pipeline.runtime``'s).

Without ``--runner`` in the Beam arguments, pipelines run on Beam's in-process ``FnApiRunner`` (never the
Prism-downloading DirectRunner, never ``multi_threading`` mode). Extra Beam options pass through
unchanged, e.g. ``--direct_num_workers=2 --direct_running_mode=multi_processing`` or
``--runner=DataflowRunner --project=...``. A refused option raises ``UsageError`` (the tokenizer's user error).
"""

from __future__ import annotations

from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import runtime
from pipeline.tokenize import UsageError


def pipeline_options(beam_args: Sequence[str] | None) -> PipelineOptions:
    """PipelineOptions from raw Beam arguments; refuses the mode known to drop records here."""
    try:
        return runtime.make_options(beam_args)
    except runtime.RunnerOptionError as e:
        raise UsageError(str(e)) from e


def make_pipeline(beam_args: Sequence[str] | None = None) -> beam.Pipeline:
    """A Beam pipeline: FnApiRunner in-process unless the arguments name a runner."""
    return runtime.new_pipeline(options=pipeline_options(beam_args))


def runs_in_this_process(beam_args: Sequence[str] | None) -> bool:
    """True when DoFns run inside this process (then a progress bar drawn by a DoFn is visible)."""
    return runtime.runs_in_this_process(pipeline_options(beam_args))


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

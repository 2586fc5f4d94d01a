"""Run one named pipeline end to end: config -> inputs -> Beam -> shards, report.json, funnel.png.

``run_pipeline`` is what ``refinery run`` calls. A run is fingerprinted (pipeline spec, input files with
sizes and modification times, limit); when OUT already holds a complete run with the same fingerprint, the
run is skipped and says so (``force=True`` reruns). Shards of a rerun are byte-identical.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Any, Dict, Optional, Sequence

from pipeline import report as report_mod
from pipeline.io import fs
from pipeline.config import PipelineSpec, get_pipeline

log = logging.getLogger("webrefinery")

COMMON_CRAWL_DEFAULT = "https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-22/warc.paths.gz"
DEFAULT_REMOTE_LIMIT = 1000


def _input_signature(path: str) -> Dict[str, Any]:
    if "://" in path:
        return {"path": path}
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def run_fingerprint(spec: PipelineSpec, paths: Sequence[str], limit: Optional[int]) -> str:
    payload = {
        "pipeline": spec.name,
        "stages": [{"name": s.name, "params": dataclasses.asdict(s.params)} for s in spec.stages],
        "output": dataclasses.asdict(spec.output),
        "read": dataclasses.asdict(spec.read),
        "inputs": [_input_signature(p) for p in paths],
        "limit": limit,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _completed_run(out_dir: str, fingerprint: str) -> Optional[Dict[str, Any]]:
    """The report of a complete run with this fingerprint in ``out_dir`` (local or gs://...), else None."""
    manifest = fs.join(out_dir, "manifest.json")
    if not (fs.exists(manifest) and fs.exists(fs.join(out_dir, "report.json"))):
        return None
    try:
        m = json.loads(fs.read_bytes(manifest))
    except (OSError, ValueError):
        return None
    if m.get("fingerprint") != fingerprint:
        return None
    for kind in ("documents", "rejected"):
        present = set(fs.list_files(fs.join(out_dir, kind, "*")))
        for entry in m.get(kind, []):
            if fs.join(out_dir, kind, entry["name"]) not in present:
                return None
    return report_mod.load_report(out_dir)


def run_pipeline(
    name: str,
    inputs: Sequence[str],
    out_dir: str,
    config: Optional[str] = None,
    overrides: Sequence[str] = (),
    limit: Optional[int] = None,
    beam_args: Sequence[str] = (),
    force: bool = False,
    draw: bool = True,
) -> Dict[str, Any]:
    """Run pipeline ``name`` over ``inputs`` into ``out_dir``; return the checked report."""
    from pipeline import beam as beam_mod
    from pipeline.io.readers import expand_inputs

    spec = get_pipeline(name, config, overrides)
    paths = expand_inputs(list(inputs), commoncrawl_base_url=spec.read.commoncrawl_base_url)
    fingerprint = run_fingerprint(spec, paths, limit)
    if not force:
        done = _completed_run(out_dir, fingerprint)
        if done is not None:
            done["skipped"] = True
            log.warning("%s already holds a complete run of '%s' on the same inputs: skipping (use --force to rerun)", out_dir, name)
            return done

    start = time.time()
    stages = spec.build_stages()
    run_info = {
        "pipeline": name,
        "fingerprint": fingerprint,
        "inputs": len(paths),
        "stages": [{"name": s.name, "params": dataclasses.asdict(s.params)} for s in spec.stages],
    }
    counters = beam_mod.run(stages, paths, out_dir, spec.output, run_info, limit=limit, beam_args=beam_args, read_params=spec.read)
    report = report_mod.build_report(name, [s.name for s in stages], counters)
    report_mod.check_report(report)
    manifest = json.loads(fs.read_bytes(fs.join(out_dir, "manifest.json")))
    report["written"] = report_mod.cross_check_manifest(report, manifest)
    from pipeline.quality.summary import quality_sections

    quality = quality_sections(out_dir, run_info["stages"], manifest)  # the quality stages' section, if any
    if quality:
        report["quality"] = quality
    report["seconds"] = round(time.time() - start, 2)
    report["inputs"] = len(paths)
    report_mod.write_report(report, out_dir)
    if draw:
        report_mod.draw_funnel(report, fs.join(out_dir, "funnel.png"))
    return report

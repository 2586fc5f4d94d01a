"""Outputs of every pipeline stay byte-identical across refactors (shards, rejected shards, tokenizer, token
shards, report counts), compared with the hashes written by the commit before the structural refactor."""

from __future__ import annotations

import json

import pytest

from . import golden


@pytest.mark.slow
def test_every_pipeline_output_is_byte_identical_to_the_golden_run(shared_data, tmp_path):
    want = json.loads(golden.GOLDEN_FILE.read_text())
    got = golden.compute(tmp_path, shared_data, golden.HERE.parents[1])
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].get("counts") == want[name].get("counts"), f"{name}: report counts changed"
        assert got[name].get("rows") == want[name].get("rows"), f"{name}: shard row counts changed"
        assert got[name]["files"] == want[name]["files"], f"{name}: output bytes changed"

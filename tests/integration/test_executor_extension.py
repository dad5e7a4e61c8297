"""The executor extension point, end to end: ``cluster.kind=process_test``, defined only in
tests/fixtures/process_executor.py and registered by the test, trains a point of the embedded tiny config through
``ito-sweep train``: validation, submission, waiting (its own liveness check) and the job record all go through it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fixtures.process_executor import CHECKS, NAME, SUBMITTED
from fixtures.tiny_run import TINY_RUN

from cluster.executors import Executor
from cluster.jobs import TRAIN_JOBS
from cluster.waiting import JOB_RECORD
from flows import cli
from ito_core.artifacts import RunLayout, run_key
from ito_core.config import load_config

POINT = [*TINY_RUN, "train.steps=2", "train.checkpoint_every=2", "data.sources=[shapes]", "data.shapes_train=64",
         "data.shapes_eval=32", "data.samples_per_shard=32"]


@pytest.mark.timeout(600)
def test_an_executor_from_a_test_module_trains_a_point_through_the_cli(
        process_executor: Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in cli.PREFECT_DEFAULTS:  # cli.main sets them in os.environ: keep them to this test
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
    overrides = [*POINT, f"cluster.kind={NAME}", f"storage.root={tmp_path / 'store'}",
                 f"cluster.work_dir={tmp_path / 'work'}", f"cluster.scratch_dir={tmp_path / 'scratch'}"]
    assert cli.main(["train", *overrides]) == 0
    key = run_key(load_config(overrides))
    manifest = json.loads((tmp_path / "store" / RunLayout(key).train / "manifest.json").read_text())
    assert manifest["step"] == 2
    assert len(SUBMITTED) == 1 and CHECKS[SUBMITTED[0]] > 0, "waited on through the executor's own liveness check"
    record = json.loads((tmp_path / "work" / key / TRAIN_JOBS / JOB_RECORD).read_text())
    assert record == {"job_id": SUBMITTED[0], "kind": NAME, "num_tasks": 1, "inputs": ""}

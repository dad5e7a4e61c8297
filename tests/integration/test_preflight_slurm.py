"""The preflight's SLURM check against a real single-node cluster (cluster/slurm-up.sh: partition ``debug``,
slurmdbd accounting): a partition the cluster does not have ends ``ito-sweep train`` in one line listing the real
ones, before any job; the cluster's own settings pass ``sbatch --test-only``; an account the user has no association
with is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.slurm_cluster import SlurmCluster
from integration.test_preflight_s3 import cli_without_stages  # noqa: F401 - the fixture

from cluster.slurm_check import check_slurm
from flows import cli
from ito_core.config import load_config

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("cli_without_stages")]


def test_a_partition_the_cluster_lacks_is_one_line_listing_the_real_ones(
        slurm_cluster: SlurmCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = [f"storage.root={tmp_path / 'store'}", f"cluster.work_dir={tmp_path / 'work'}"]
    assert cli.main(["train", "cluster=slurm", "cluster.partition=gpu-nonsense", *where]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"ito-sweep: preflight slurm: failed: config cluster.partition='gpu-nonsense': no "
                                f"partition 'gpu-nonsense' on this cluster; set it to one of "
                                f"['{slurm_cluster.partition}']"], err
    assert not (tmp_path / "work").exists(), "no job folder: nothing was submitted"


def test_the_clusters_own_settings_pass_and_an_unknown_account_is_named(slurm_cluster: SlurmCluster) -> None:
    [good] = check_slurm(load_config(["cluster=slurm", f"cluster.partition={slurm_cluster.partition}",
                                      "cluster.tasks_per_node=2"]).cluster)
    assert good.status == "ok" and "accepted by sbatch --test-only" in good.message, good
    [bad] = check_slurm(load_config(["cluster=slurm", "cluster.account=nolab"]).cluster)
    assert bad.failed and "cluster.account" in bad.message and "nolab" in bad.message, bad

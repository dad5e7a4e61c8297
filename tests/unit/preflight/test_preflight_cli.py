"""Issue 25's items through the CLI as a user types them: each ends in one line naming the setting and the fix,
exit 2, before any work (the flow and the stages are replaced by failures here: they must not start)."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import cli


@pytest.fixture(autouse=True)
def _nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main sets Prefect defaults in os.environ (kept out of other tests); no flow or stage may run."""
    for name in cli.PREFECT_DEFAULTS:
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
    monkeypatch.setattr("flows.sweep.ito_sweep", lambda **kw: pytest.fail("the flow started"))
    monkeypatch.setattr("flows.stages.prep_task.fn", lambda *a, **kw: pytest.fail("prep started"))


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS credentials from anywhere (env, files, instance metadata)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def where(tmp_path: Path) -> list[str]:
    return [f"storage.root={tmp_path / 'store'}", f"cluster.work_dir={tmp_path / 'work'}"]


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["run", "prep"])
def test_item1_s3_without_credentials_is_one_line_before_any_work(
        command: str, no_aws: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([command, "storage.root=s3://bucket/ito", f"cluster.work_dir={tmp_path}"]) == 2
    err = one_line(capsys)
    assert "storage.root='s3://bucket/ito': no AWS credentials found; set AWS_ACCESS_KEY_ID" in err


def test_item1_plan_says_why_it_cannot_tell_the_stages(no_aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "storage.root=s3://bucket/ito"]) == 2
    out, err = capsys.readouterr()
    assert "| unknown | unknown | unknown | unknown |" in out and "| ? |" not in out.split("| run key |")[1][:200]
    assert "- preflight storage: failed: config storage.root='s3://bucket/ito': no AWS credentials" in out
    assert "unknown = store not read, it failed the preflight storage check above" in out
    assert err.count("\n") == 1 and "no AWS credentials" in err


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sinfo, sacctmgr and sbatch answering as a cluster with partitions gpu (default) and cpu, account lab with
    QOS normal,high for this user, and a controller that refuses more than 4 nodes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"sinfo": "printf 'gpu*\\ncpu\\n'",
               "sacctmgr": "printf 'lab|normal,high\\n'",
               "sbatch": 'case "$*" in *--nodes=[5-9]*) echo "sbatch: error: Batch job submission failed: Requested '
                         'node configuration is not available" >&2; exit 1;; esac; echo "sbatch: Job 1 to start"'}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


@pytest.mark.parametrize(("setting", "message"), [
    ("cluster.partition=nonsense", "config cluster.partition='nonsense': no partition 'nonsense' on this cluster; set "
                                   "it to one of ['gpu', 'cpu']"),
    ("cluster.account=other", "config cluster.account='other': user"),
    ("cluster.qos=urgent", "config cluster.qos='urgent': not allowed for user"),
    ("cluster.nodes=8", "config cluster.nodes / tasks_per_node / cpus_per_task / gpus_per_node / mem_gb / constraint: "
                        "sbatch --test-only refused the training job (sbatch: error: Batch job submission failed: "
                        "Requested node configuration is not available)"),
])
def test_item2_slurm_settings_are_checked_against_the_cluster(
        setting: str, message: str, fake_slurm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "cluster=slurm", setting, *where(tmp_path)]) == 2
    assert message in one_line(capsys)


def test_item2_an_empty_partition_needs_a_default_one(fake_slurm: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (fake_slurm / "sinfo").write_text("#!/bin/sh\nprintf 'gpu\\ncpu\\n'\n")
    assert cli.main(["train", "cluster=slurm", *where(tmp_path)]) == 2
    assert "config cluster.partition is empty and this cluster has no default partition; set cluster.partition to " \
           "one of ['gpu', 'cpu']" in one_line(capsys)


def test_item2_a_nonsense_name_fails_validation_and_good_settings_pass(
        fake_slurm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "cluster=slurm", "cluster.partition='gpu queue'", *where(tmp_path)]) == 2
    assert "config cluster.partition: 'gpu queue' is not a SLURM partition name" in one_line(capsys)
    assert cli.main(["plan", "cluster=slurm", "cluster.account=lab", "cluster.qos=high", *where(tmp_path)]) == 0
    assert "preflight slurm: ok: partition 'gpu', account 'lab', QOS 'high' accepted by sbatch --test-only" in \
        capsys.readouterr().out


def test_item3_a_missing_data_input_fails_before_prep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = ["data=raw", "data.input_kind=folder", f"data.input={tmp_path / 'photos'}", *where(tmp_path)]
    assert cli.main(["prep", *raw]) == 2
    assert f"config data.input='{tmp_path / 'photos'}': no such folder; point data.input at your folder data" in \
        one_line(capsys)


def test_item4_a_report_pattern_that_matches_nothing_is_refused(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "report.metrics=[fashion_mnist/acc1,fasion_mnist/acc5]", *where(tmp_path)]) == 2
    err = one_line(capsys)
    assert "config report.metrics: 'fasion_mnist/acc5' matches no metric the eval tasks record" in err
    assert "valid names: fashion_mnist/acc1, fashion_mnist/acc5, fashion_mnist/mean_per_class_recall" in err


class Refuses(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def guarded_url() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), Refuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api"
    server.shutdown()
    server.server_close()


def test_item7_serve_names_the_auth_string_in_its_help_and_its_401(
        guarded_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    assert "PREFECT_API_AUTH_STRING" in capsys.readouterr().out
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    monkeypatch.setattr("prefect.serve", lambda *a, **kw: pytest.fail("serve started"))
    with temporary_settings({PREFECT_API_URL: guarded_url, PREFECT_API_AUTH_STRING: None}):  # as exported
        assert cli.main(["serve"]) == 2
    assert f"PREFECT_API_URL={guarded_url} answered 401: PREFECT_API_AUTH_STRING is not set" in one_line(capsys)


def test_item11_too_few_shards_for_the_ranks_is_caught_before_prep(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--skip-check", "slurm", "cluster=slurm", "cluster.nodes=2", "data.max_train_samples=512",
                     *where(tmp_path)]) == 2
    assert ("the training data has 1 shard(s) (at most 1536 samples at data.samples_per_shard=2000) for 2 ranks, "
            "and each rank reads whole shards; set data.samples_per_shard <= 768, or a larger data.max_train_samples "
            "(now 512), or fewer ranks (cluster.nodes=2 x cluster.tasks_per_node=1)") in one_line(capsys)

"""The shared SLURM watcher: one ``squeue`` (and at most one ``sacct``) per poll interval, whatever the number of
jobs; states, array tasks, forgotten jobs and node failures read from faked scheduler commands."""

from __future__ import annotations

import subprocess

import pytest

from cluster.slurm_watch import GONE, SlurmWatcher, query, slurm_state


class FakeScheduler:
    """``squeue``/``sacct`` answers from a table of job id -> attempts (state, nodes), counting each call."""

    def __init__(self, jobs: dict[str, list[tuple[str, str]]], *, in_queue: set[str] | None = None,
                 accounting: bool = True) -> None:
        self.jobs, self.accounting, self.calls, self.asked = jobs, accounting, [], []
        self.in_queue = set(jobs) if in_queue is None else in_queue  # jobs squeue still lists

    def __call__(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        ids = command[command.index("-j") + 1].split(",")
        self.calls.append(command[0])
        self.asked.append(ids)
        if command[0] == "squeue":
            known = [i for i in ids if i in self.in_queue]
            if len(ids) == 1 and not known:
                return subprocess.CompletedProcess(command, 1, "", "slurm_load_jobs error: Invalid job id specified")
            return subprocess.CompletedProcess(command, 0, "".join(f"{i}|{self.jobs[i][-1][0]}\n" for i in known), "")
        if not self.accounting:
            return subprocess.CompletedProcess(command, 1, "", "sacct: error: Slurm accounting storage is disabled")
        rows = [f"{i}|{state}|{nodes}\n" for i in ids for state, nodes in self.jobs.get(i, [])]
        return subprocess.CompletedProcess(command, 0, "".join(rows), "")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _calls_per_poll(num_jobs: int, polls: int = 5) -> list[list[str]]:
    """Each poll: every waiting job asks the watcher for its state once, then the interval passes."""
    jobs = {str(100 + i): [("RUNNING", "vm")] for i in range(num_jobs)}
    scheduler, clock = FakeScheduler(jobs), Clock()
    watcher = SlurmWatcher(interval_s=3.0, run=scheduler, clock=clock)
    for job_id in jobs:
        watcher.register(job_id)
    per_poll = []
    for _ in range(polls):
        scheduler.calls = []
        for job_id in jobs:
            for _ in range(3):  # a waiting loop polls its result files every second: 3 looks per interval
                assert watcher.info(job_id).state == "RUNNING"
        per_poll.append(scheduler.calls)
        clock.now += 3.0
    return per_poll


def test_scheduler_calls_per_poll_do_not_depend_on_the_number_of_jobs() -> None:
    one, hundred = _calls_per_poll(1), _calls_per_poll(100)
    assert one == hundred
    # the first poll also asks sacct once, for past node failures of the jobs it has not seen yet
    assert one[0] == ["squeue", "sacct"] and all(calls == ["squeue"] for calls in one[1:])


def test_states_come_from_squeue_then_sacct_then_gone() -> None:
    jobs = {"1": [("RUNNING", "vm")], "2": [("PENDING", "")], "3_1": [("PENDING", "")],
            "4": [("NODE_FAIL", "mn1"), ("CANCELLED by 0", "mn2")], "5": []}
    scheduler = FakeScheduler(jobs, in_queue={"1", "2", "3_1"})
    infos = query(jobs, run=scheduler)
    assert {job_id: info.state for job_id, info in infos.items()} == {
        "1": "RUNNING", "2": "PENDING", "3_1": "PENDING", "4": "CANCELLED", "5": GONE}
    assert infos["4"].node_failures == ["mn1"] and scheduler.calls == ["squeue", "sacct"]
    assert slurm_state("5", run=FakeScheduler(jobs, in_queue=set())) == GONE  # one id: squeue's "Invalid job id"


def test_without_accounting_a_job_squeue_forgot_is_gone_and_no_answer_is_unsure() -> None:
    jobs = {"1": [("RUNNING", "vm")], "2": [("COMPLETED", "vm")]}
    infos = query(jobs, run=FakeScheduler(jobs, in_queue={"1"}, accounting=False))
    assert infos["1"].state == "RUNNING" and infos["2"].state == GONE
    assert query(["1"], run=lambda command: None)["1"].state is None, "no answer at all: unsure, not gone"


def test_a_state_change_asks_for_node_failures_once_for_all_changed_jobs() -> None:
    jobs = {"1": [("RUNNING", "mn[1-2]")], "2": [("RUNNING", "mn3")]}
    scheduler, clock = FakeScheduler(jobs), Clock()
    watcher = SlurmWatcher(interval_s=1.0, run=scheduler, clock=clock)
    for job_id in jobs:
        watcher.register(job_id)
    watcher.info("1")
    jobs["1"] = [("NODE_FAIL", "mn[1-2]"), ("PENDING", "")]  # requeued after a node failure
    jobs["2"] = [("NODE_FAIL", "mn3"), ("PENDING", "")]
    scheduler.calls, clock.now = [], 1.0
    assert watcher.info("1").node_failures == ["mn[1-2]"] and watcher.info("2").node_failures == ["mn3"]
    assert scheduler.calls == ["squeue", "sacct"]
    scheduler.calls, clock.now = [], 2.0
    assert watcher.info("1").node_failures == ["mn[1-2]"], "kept without asking again"
    assert scheduler.calls == ["squeue"]


def test_unregistered_jobs_leave_the_query() -> None:
    jobs = {"1": [("RUNNING", "vm")], "2": [("RUNNING", "vm")]}
    scheduler = FakeScheduler(jobs)
    watcher = SlurmWatcher(interval_s=0.0, run=scheduler)
    for job_id in ("1", "2", "2"):
        watcher.register(job_id)
    watcher.unregister("1")
    watcher.unregister("2")  # one of its two waiters is done: the other still waits
    scheduler.asked = []
    watcher.info("2")
    assert scheduler.asked[0] == ["2"], "squeue asks only for the jobs still waited for"
    with pytest.raises(KeyError, match="not registered"):
        watcher.info("1")


def test_a_burst_of_new_jobs_waits_for_the_next_refresh_instead_of_one_each() -> None:
    jobs = {str(i): [("PENDING", "")] for i in range(50)}
    scheduler, clock = FakeScheduler(jobs), Clock()
    watcher = SlurmWatcher(interval_s=3.0, run=scheduler, clock=clock)
    watcher.register("0")
    watcher.info("0")
    for job_id in list(jobs)[1:]:  # submitted within the interval
        watcher.register(job_id)
        assert watcher.info(job_id).state is None, "unknown until the next refresh"
    assert scheduler.calls == ["squeue", "sacct"]
    clock.now = 3.0
    assert all(watcher.info(job_id).state == "PENDING" for job_id in jobs)
    assert scheduler.calls == ["squeue", "sacct"] * 2

"""docs/CLUSTER.md followed top to bottom: no command launches a deployment before the commands that start the
Prefect server and serve the deployments, and every ``--watch`` has a ``--watch-timeout`` (with nothing serving a
deployment, ``prefect deployment run --watch`` waits forever)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "CLUSTER.md"


def commands() -> list[str]:
    """The commands of the doc's bash blocks in reading order, continuation lines joined, comments left out."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def first(needle: str) -> int:
    return next(i for i, command in enumerate(commands()) if needle in command)


def test_no_deployment_is_launched_before_the_server_and_a_served_process() -> None:
    launch = first("prefect deployment run")
    assert first("prefect server start") < launch, "start the server (section 1) before launching a deployment"
    assert first("ito-sweep serve") < launch, "serve the deployments (section 2a) before launching one"


def test_every_watch_has_a_timeout() -> None:
    watching = [command for command in commands() if re.search(r"--watch\b(?!-)", command)]
    assert watching and all("--watch-timeout" in command for command in watching), watching

"""torch.distributed set-up from the environment a launcher (submitit, SLURM, torchrun) provides."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What torch's env:// rendezvous needs; a launcher sets all of them or none (a lone process).
RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def check_rendezvous_env(environ: Mapping[str, str]) -> None:
    """Raise ``ValueError`` naming the variables when only some of the rendezvous variables are set.

    A half-set environment is inherited, not launched (e.g. RANK and WORLD_SIZE exported in the submitting
    shell): torch would fail with "MASTER_ADDR expected, but not set", which does not say where RANK came from.
    """
    present = [name for name in RENDEZVOUS_VARS if name in environ]
    if present and len(present) < len(RENDEZVOUS_VARS):
        missing = [name for name in RENDEZVOUS_VARS if name not in environ]
        raise ValueError(
            f"environment: {', '.join(f'{n}={environ[n]}' for n in present)} set but {', '.join(missing)} not: "
            "these come from a launcher (SLURM/submitit, torchrun), not from the shell; unset "
            f"{' '.join(present)} in the shell you start from, or launch every rank with a launcher")


def init_distributed() -> DistEnv:
    """Join the process group described by RANK/WORLD_SIZE/MASTER_*; a lone process makes its own.

    Without these variables DeepSpeed would try MPI discovery, so a single process (a researcher's
    ``ito-sweep train``) gets a one-rank group on loopback.
    """
    import deepspeed
    import torch

    # DeepSpeed JIT-builds its CPU comm op with ninja; pip installs ninja beside this interpreter,
    # which is not on PATH when a venv's script is called by its full path.
    bin_dir = os.path.dirname(sys.executable)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    check_rendezvous_env(os.environ)
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    return DistEnv(rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   world_size=int(os.environ["WORLD_SIZE"]))


def all_ranks(ok: bool, device: object) -> bool:
    """Whether ``ok`` holds on every rank: one all-reduce, so all ranks take the same branch."""
    import torch

    flag = torch.tensor([0.0 if ok else 1.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return flag.item() == 0.0

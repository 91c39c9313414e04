"""DDP pretraining of one study run: ``torchrun ... -m divssl.study.ddp CONFIG.yaml``.

A run with ``gpus_per_run > 1`` is launched, on whatever backend, as DDP with
``torch.distributed.run`` (torchrun) inside its job (:func:`run_ddp`); every rank runs
:func:`ddp_main` (``pretrain(config, resume=True)``) and rank 0 writes the run.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from divssl import distributed as dist
from divssl.errors import RunFailed
from divssl.pretrain.config import load_config
from divssl.pretrain.loop import pretrain


def ddp_command(config_path: Path, gpus: int) -> list[str]:
    """``torchrun --standalone --nproc_per_node=G -m divssl.study.ddp CONFIG``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={gpus}",
        "-m",
        "divssl.study.ddp",
        str(config_path),
    ]


def ddp_main(argv: Sequence[str]) -> int:
    """Entry point of one DDP rank: ``python -m divssl.study.ddp CONFIG.yaml``."""
    if len(argv) != 1:
        print("usage: python -m divssl.study.ddp CONFIG.yaml", file=sys.stderr)
        return 2
    try:
        pretrain(load_config(argv[0]), resume=True)
    finally:
        # A rank that exits with the gloo process group alive can abort ("terminate called
        # without an active exception", SIGABRT) after its run completed: destroy it first.
        dist.cleanup()
    return 0


def run_ddp(config_path: Path, gpus: int, folder: Path) -> None:
    """Run one DDP pretraining with torchrun; its output goes to ``<run dir>/ddp.log``.

    Raises:
        RunFailed: torchrun exited with an error (the log tail is in the message).
    """
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "ddp.log"
    with log.open("ab") as fh:
        proc = subprocess.run(
            ddp_command(config_path, gpus), stdout=fh, stderr=subprocess.STDOUT, check=False
        )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RunFailed(f"torchrun exited with code {proc.returncode}; {log}:\n{tail}")


if __name__ == "__main__":
    sys.exit(ddp_main(sys.argv[1:]))

"""Which process of a distributed run this is, read from the launcher's environment.

transferlab never launches processes itself; Lightning and the cluster do:

- ``trainer=ddp`` started from a shell: Lightning's subprocess launcher re-runs the same
  command line in one process per extra local device, with ``LOCAL_RANK``/``NODE_RANK``
  (and ``WORLD_SIZE``) set;
- ``torchrun``: every rank runs the whole command, with ``RANK``/``LOCAL_RANK`` set;
- SLURM ``srun``: every task runs the whole command, with ``SLURM_PROCID`` set.

Global rank 0 owns everything with side effects outside training: the Prefect flow, the
MLflow runs, the carbon tracker, the cache records. Other ranks only train (see
:func:`pipelines.flows.run_worker`); the steps that must match across ranks (data, resume checkpoint,
the final collective validation) run in every rank.
"""

from __future__ import annotations

import os


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def global_rank(devices_per_node: int = 1) -> int:
    """This process's global rank: ``RANK``, else ``SLURM_PROCID``, else
    ``NODE_RANK * devices_per_node + LOCAL_RANK``; 0 outside any launcher."""
    for name in ("RANK", "SLURM_PROCID"):
        value = _env_int(name)
        if value is not None:
            return value
    return (_env_int("NODE_RANK") or 0) * devices_per_node + (_env_int("LOCAL_RANK") or 0)


def is_rank_zero() -> bool:
    """True unless a launcher says this is another rank (any rank variable non-zero)."""
    return all(not _env_int(name) for name in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"))

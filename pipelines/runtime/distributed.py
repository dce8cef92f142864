"""Which process of a distributed run this is, read from the launcher's environment.

transferlab never launches processes itself; Lightning and the cluster do:

- ``trainer=ddp`` started from a shell: Lightning's subprocess launcher re-runs the same
  command line in one process per extra local device, with ``LOCAL_RANK``/``NODE_RANK``
  (and ``WORLD_SIZE``) set;
- ``torchrun``: every rank runs the whole command, with ``RANK``/``LOCAL_RANK`` set;
- SLURM ``srun``: every task runs the whole command, with ``SLURM_PROCID`` set.

Global rank 0 owns everything with side effects outside training: the Prefect flow, the
MLflow runs, the carbon tracker, the cache records. Other ranks only train (see
:func:`run_worker`); the steps that must match across ranks (data, resume checkpoint,
the final collective validation) run in every rank.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from pipelines.config.schema import TransferLabConfig
from pipelines.errors import UserError

log = logging.getLogger("transferlab")

# How long a non-zero rank waits for rank 0 to finish the prep stage (torchrun/SLURM start
# every rank at once; Lightning's own launcher starts them after prep is done).
PREP_WAIT_S = float(os.environ.get("TRANSFERLAB_PREP_WAIT_S", 3600))


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


def run_worker(cfg: TransferLabConfig, until: str) -> dict[str, Any]:
    """What a rank > 0 does for any command: reuse rank 0's prep, take part in pretraining, stop.

    No Prefect, no MLflow, no carbon tracker, no cache writes. Stages after pretraining run
    single-device in rank 0 only.
    """
    from pipelines import stages
    from pipelines.cache.store import StageCache
    from pipelines.stages.common import StageContext
    from pipelines.stages.prep import prep_fingerprint

    ctx = StageContext.create(cfg)  # a NullTracker in this rank
    fp = prep_fingerprint(cfg)
    cache = StageCache(ctx.home, "prep")
    deadline = time.monotonic() + PREP_WAIT_S
    while cache.lookup(fp) is None:
        if time.monotonic() > deadline:
            raise UserError(f"rank {global_rank()}: no prepared data {cache.path(fp)} after {PREP_WAIT_S:.0f} s; "
                            "paths.home must be on a filesystem all nodes share")
        time.sleep(2.0)
    prep_record = stages.prep(ctx)  # a cache hit: reads the record, logs nowhere
    if until == "prep":
        return {"rank": global_rank(), "until": until}
    stages.pretrain(ctx, prep_record)
    return {"rank": global_rank(), "until": "pretrain"}

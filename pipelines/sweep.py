"""The ``data_efficiency`` sweep: pretrain once, then fine-tune over label budgets x inits x seeds.

Why a sweep: one pretrained-vs-scratch comparison at one label budget says little; the
reason to pretrain is that it needs fewer labels for the same quality, which only a
learning curve shows, and whether it pays back its own CO2 depends on how many fine-tunes
reuse it. The report answers both (modules/evaluation/sweep_report.py).

How it runs: prep and pretrain as in the main pipeline (cache hits when present), then
every point is a Prefect task. With ``sweep.parallel`` > 1 the points run side by side in
worker processes (Prefect's ProcessPoolTaskRunner: each worker trains on its own main
thread, so Lightning's signal handling works, and the cores are split between them);
with 1 they run one after another in the flow's process. With ``sweep.cluster`` (a Dask
scheduler address) they run on that cluster's workers, on as many machines as it has
(prefect-dask's task runner: Dask hands each point to a free worker and reruns a point
whose worker died on another one). A failing point is retried
``sweep.retries`` times (bad input is not retried: it would fail the same way) and then
reported as failed without stopping the others. Every finished point is a fine-tune cache
entry, so running the sweep again reuses it (a cache hit, with its own MLflow child run).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, flow, task
from prefect.cache_policies import NO_CACHE

from pipelines import stages
from pipelines.checkpoint_refs import resolve_init
from pipelines.config.compose import check_task, check_zero_shot, compose
from pipelines.config.schema import SweepConfig, TransferLabConfig
from pipelines.errors import UserError
from pipelines.flows import carbon_totals, parent_run, prep_task, pretrain_task, stage_summaries
from pipelines.preflight import CONNECT_TIMEOUT_S, check_budget, check_inputs, one_line
from pipelines.runtime import lifecycle
from pipelines.stages.common import StageContext
from pipelines.stages.records import FinetuneRecord, PrepRecord, PretrainRecord, StageRecord
from pipelines.tracking.runs import TAG_KIND, Tracker, tracking_uri

log = logging.getLogger("transferlab")


@dataclass(frozen=True)
class Point:
    init: str
    budget: int  # labeled examples the fine-tune uses (after clamping to the pool)
    seed: int
    requested: int | str  # what sweep.budgets said

    @property
    def label(self) -> str:
        """``checkpoint:<name>`` for a checkpoint reference (pipelines.stages.finetune.init_label)."""
        from pipelines.stages.finetune import init_label

        return init_label(self.init)

    @property
    def name(self) -> str:
        if self.init == "zero_shot":
            return "finetune[zero_shot]"
        return f"finetune[{self.label}, n={self.budget}, seed={self.seed}]"


def default_parallel() -> int:
    """Two cores per fine-tune: on 2 cores, two tiny fine-tunes side by side finished 12
    points only 4% sooner than one after another (worker start-up eats the gain;
    docs/BENCHMARKS.md), so side by side starts paying on larger machines."""
    return max(1, (os.cpu_count() or 1) // 2)


def plan(sweep_cfg: SweepConfig, inits: list[str], pool: int) -> list[Point]:
    """Every (budget, init, seed) point; budgets over the labeled pool (or ``all``) become
    the pool size, with a warning, and budgets that end up equal are run once."""
    budgets: list[tuple[int, int | str]] = []
    for requested in sweep_cfg.budgets:
        budget = pool if requested == "all" else min(int(requested), pool)
        if requested != "all" and budget < int(requested):
            log.warning("sweep: budget %s exceeds the %d labeled training examples; using %d (recorded in the "
                        "report and on the runs)", requested, pool, pool)
        if budget not in [b for b, _ in budgets]:
            budgets.append((budget, requested))
        else:
            log.warning("sweep: budget %s is the same as an earlier one after clamping to %d; run once", requested,
                        budget)
    points = [Point(init, budget, seed, requested) for budget, requested in budgets
              for init in inits if init != "zero_shot" for seed in sweep_cfg.seeds]
    if "zero_shot" in inits:  # no labels and no randomness: one point
        points.append(Point("zero_shot", 0, sweep_cfg.seeds[0], 0))
    return points


def _check_budgets(cfg: TransferLabConfig, points: list[Point], label_names: list[str]) -> None:
    """A classification budget below the class count cannot hold every class: refuse the
    sweep up front rather than fail those points one by one."""
    smallest = min((p.budget for p in points if p.init != "zero_shot"), default=None)
    if smallest is not None:
        check_budget(cfg.finetune.task, smallest, len(label_names), "sweep.budgets")


def point_config(cfg: TransferLabConfig, point: Point, threads: int | None, parallel: int) -> TransferLabConfig:
    """The point's own config. ``threads`` None: the torch default of the machine it lands on
    (a cluster worker); ``parallel`` > 1: other points may share that machine."""
    out = copy.deepcopy(cfg)
    out.seed = point.seed
    out.finetune.inits = [point.init]
    # The requested budget: the recipe clamps it to the pool and the run records both
    # (param finetune.train_examples, metric data/train_examples, tag ..._clamped).
    out.finetune.train_examples = max(point.requested if isinstance(point.requested, int) else point.budget, 1)
    out.trainer.num_threads = out.trainer.num_threads or threads
    out.trainer.num_workers = 0 if out.trainer.num_workers is None else out.trainer.num_workers
    if parallel > 1:
        # Side by side, a machine-wide measurement would count the other points' load too:
        # each point measures its own process.
        out.carbon.tracking_mode = "process"
    return out


def _bad_input_is_final(task_: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed point unless it failed on bad input, which fails the same way again."""
    from modules.data.errors import DataError

    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, (UserError, DataError))


def _worker_init() -> None:
    """Once per worker process: quiet the libraries and import the training stack now, so
    the seconds of importing torch/Lightning/transformers are not timed (and charged as
    CO2) inside the first fine-tune's tracked stage."""
    from pipelines.runtime.env import quiet_libraries
    from pipelines.runtime.lifecycle import die_with_parent, sigterm_as_interrupt

    die_with_parent()  # no fine-tune outlives a killed sweep (SIGKILL: the sweep's next start reaps)
    sigterm_as_interrupt()  # stopped by the sweep: its MLflow run KILLED, carbon saved, as for Ctrl-C
    quiet_libraries()
    import modules.training.recipes  # noqa: F401
    import pipelines.stages.finetune  # noqa: F401


@task(cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=_bad_input_is_final)
def sweep_point(cfg: TransferLabConfig, prep_record: PrepRecord, pretrain_record: PretrainRecord, init: str,
                parent_run_id: str) -> FinetuneRecord:
    if cfg.sweep.cluster:  # a Dask worker: nothing ran _worker_init in its process
        from pipelines.runtime.env import quiet_libraries

        quiet_libraries()
    with lifecycle.deferred_sigterm():  # in a worker: stopped by the sweep, never mid-MLflow-write
        return stages.finetune(StageContext.create(cfg, parent_run_id), prep_record, pretrain_record, init)


@contextmanager
def _shared_api() -> Iterator[None]:
    """Point the worker processes at this flow's Prefect API.

    Under Prefect's temporary (ephemeral) server the URL is in no setting, so each worker
    would start a server of its own (seconds each) and report its task runs there, out of
    the flow run's sight. The runner hands ``os.environ`` to its workers: set the URL there
    for as long as the workers live.
    """
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    url = None if os.environ.get("PREFECT_API_URL") or ctx is None else str(ctx.client.api_url)
    if url:
        os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        if url:
            os.environ.pop("PREFECT_API_URL", None)


@contextmanager
def _workers_stop_with(runner: Any) -> Iterator[None]:
    """An interrupted sweep (Ctrl-C, SIGTERM) stops its workers instead of waiting for their
    fine-tunes to finish (the pool's shutdown waits): SIGTERM, then SIGKILL after 5 s."""
    try:
        yield
    except BaseException:
        executor = getattr(runner, "_executor", None)  # Prefect 3.8's ProcessPoolExecutor
        procs = list(getattr(executor, "_processes", {}).values())
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + 5.0
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
        raise


def run_points(cfg: TransferLabConfig, points: list[Point], prep_record: PrepRecord,
               pretrain_record: PretrainRecord, parent: str) -> list[tuple[Point, FinetuneRecord | None, str | None]]:
    """(point, finetune record or None, one-line error or None) for every point, in order."""
    if cfg.sweep.cluster:
        return _run_on_cluster(cfg, points, prep_record, pretrain_record, parent)
    parallel = min(cfg.sweep.parallel or default_parallel(), len(points))
    threads = max(1, (os.cpu_count() or 1) // parallel)
    retries = cfg.sweep.retries
    log.info("sweep: %d fine-tunes, %d side by side (%d threads each), %d retr%s per point", len(points), parallel,
             threads, retries, "y" if retries == 1 else "ies")
    calls: list[tuple[Point, Task[..., FinetuneRecord], dict[str, Any]]] = [
        (p, sweep_point.with_options(name=p.name, retries=retries),
         dict(cfg=point_config(cfg, p, threads, parallel), prep_record=prep_record,
              pretrain_record=pretrain_record, init=p.init, parent_run_id=parent)) for p in points]
    out: list[tuple[Point, FinetuneRecord | None, str | None]] = []
    if parallel == 1:  # in this process, on the main thread
        for point, call, params in calls:
            try:
                out.append((point, call(**params), None))
            except Exception as exc:  # reported as a failed point; the sweep goes on
                log.warning("sweep: %s failed (retried up to %d times unless the input was bad): %s", point.name,
                            retries, one_line(exc))
                out.append((point, None, one_line(exc)))
        return out
    from prefect.task_runners import ProcessPoolTaskRunner

    with _shared_api(), ProcessPoolTaskRunner(max_workers=parallel, initializer=_worker_init) as runner, \
            _workers_stop_with(runner):
        futures = [(point, runner.submit(call, parameters=params)) for point, call, params in calls]
        for point, future in futures:
            future.wait()
            state = future.state
            if state.is_completed():
                out.append((point, future.result(), None))
            else:
                error = state.result(raise_on_failure=False)
                why = one_line(error) if isinstance(error, BaseException) else str(state.message)
                log.warning("sweep: %s failed (retried up to %d times unless the input was bad): %s", point.name,
                            retries, why)
                out.append((point, None, why))
    return out


@contextmanager
def _api_for_cluster() -> Iterator[None]:
    """Hand the flow's Prefect API URL to the cluster's workers.

    prefect-dask ships the submitting context's settings with every task run. Under a
    temporary server the URL is in no setting, and each worker would start a server of its
    own that the flow run never sees: put the URL into the settings while submitting. Workers
    on other machines reach only a real server (``transferlab up`` and ``PREFECT_API_URL``).
    """
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ctx = FlowRunContext.get()
    if PREFECT_API_URL.value() or ctx is None:
        yield
        return
    url = str(ctx.client.api_url)
    log.info("sweep: the Dask workers report to this flow's temporary Prefect server at %s; workers on other "
             "machines need a server they can reach (docs/sweep.md)", url)
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def _run_on_cluster(cfg: TransferLabConfig, points: list[Point], prep_record: PrepRecord,
                    pretrain_record: PretrainRecord, parent: str
                    ) -> list[tuple[Point, FinetuneRecord | None, str | None]]:
    """Every point as a Prefect task on the Dask cluster at ``sweep.cluster``.

    Dask does the distributing: any worker takes the next point, and a point whose worker
    dies is rerun on another one (up to Dask's ``distributed.scheduler.allowed-failures``,
    3, then it fails as ``KilledWorker``); Prefect's retries cover a point that raises.
    Results are collected as they finish and released, so a worker that dies later does not
    make Dask recompute a finished point. On Ctrl-C the queued points are cancelled; running
    ones finish on their workers and land in the cache, which the next run reuses.
    """
    import distributed
    from prefect_dask import DaskTaskRunner

    address = str(cfg.sweep.cluster)
    by_future: dict[Any, tuple[int, Point]] = {}
    found: dict[int, tuple[Point, FinetuneRecord | None, str | None]] = {}
    with _api_for_cluster(), DaskTaskRunner(address=address,
                                            client_kwargs={"timeout": CONNECT_TIMEOUT_S}) as runner:
        log.info("sweep: %d fine-tunes on the Dask cluster at %s (%d workers now), %d retr%s per point",
                 len(points), address, len(runner.client.nthreads()), cfg.sweep.retries,
                 "y" if cfg.sweep.retries == 1 else "ies")
        try:
            for i, p in enumerate(points):
                call = sweep_point.with_options(name=p.name, retries=cfg.sweep.retries)
                # Threads: the worker machine's torch default; parallel > 1: workers may share a machine.
                params = dict(cfg=point_config(cfg, p, threads=None, parallel=2), prep_record=prep_record,
                              pretrain_record=pretrain_record, init=p.init, parent_run_id=parent)
                by_future[runner.submit(call, parameters=params).wrapped_future] = (i, p)
            for future in distributed.as_completed(list(by_future), loop=runner.client.loop):
                i, point = by_future[future]
                found[i] = (point, *_cluster_outcome(future))
                if found[i][2]:
                    log.warning("sweep: %s failed (retried up to %d times unless the input was bad): %s",
                                point.name, cfg.sweep.retries, found[i][2])
                future.release()
        except BaseException:
            runner.client.cancel([f for f in by_future if f.status == "pending"])
            raise
    # Every point has ended, so a fine-tune run still RUNNING is an attempt whose worker died
    # mid-point (Dask ran the point again elsewhere): nobody is left to end it.
    from pipelines.tracking.liveness import kill_running_children

    dead = kill_running_children(tracking_uri(cfg), parent)
    if dead:
        log.warning("sweep: %d run(s) of points whose worker died were marked KILLED (each point ran again on "
                    "another worker)", len(dead))
    return [found[i] for i in range(len(points))]


def _cluster_outcome(future: Any) -> tuple[FinetuneRecord | None, str | None]:
    """(record, None) or (None, one-line why) of a finished Dask future holding a Prefect state."""
    if future.status != "finished":  # the task itself could not run (KilledWorker, cancelled)
        exc = future.exception() if future.status == "error" else None
        return None, one_line(exc) if isinstance(exc, BaseException) else f"Dask future {future.status}"
    state = future.result()
    if state.is_completed():
        return state.result(), None
    error = state.result(raise_on_failure=False)
    return None, one_line(error) if isinstance(error, BaseException) else str(state.message)


def run_sweep(cfg: TransferLabConfig) -> dict[str, Any]:
    """Prep, pretrain, every sweep point and the report under one MLflow parent run."""
    # Before the parent run exists: bad input (or no cluster at sweep.cluster) leaves nothing behind.
    check_inputs(cfg, "finetune", sweep=True)
    resolve_init(cfg)
    check_zero_shot(cfg.finetune, cfg.model.family)
    check_task(cfg.finetune, cfg.model.family)
    started = time.perf_counter()
    name = cfg.tracking.run_name or f"{cfg.experiment_name}-{cfg.model.name}-sweep"
    tags = {TAG_KIND: "sweep", "transferlab.experiment": cfg.experiment_name, "transferlab.flow": "data_efficiency",
            "transferlab.task": cfg.finetune.task}
    with parent_run(cfg, name, tags, "sweep") as (tracker, parent):
        prep_record = prep_task(cfg, parent)
        pretrain_record = pretrain_task(cfg, prep_record, parent)
        pool = prep_record.labeled_rows["train"]
        points = plan(cfg.sweep, cfg.finetune.inits, pool)
        _check_budgets(cfg, points, prep_record.label_names)
        results = run_points(cfg, points, prep_record, pretrain_record, parent)
        report = write_report(cfg, tracker, parent, prep_record, pretrain_record, results)
        records: list[StageRecord] = [prep_record, pretrain_record, *(r for _, r, _ in results if r is not None)]
        totals = carbon_totals(records)
        tracker.log_metrics(parent, {**totals, **report["metrics"]})
        for step, metrics in report["curve"]:  # MLflow draws these as learning curves: step = labeled examples
            tracker.log_metrics(parent, metrics, step=step)
        failed = [p.name for p, r, _ in results if r is None]
        if failed:
            tracker.set_tags(parent, {"transferlab.failed_points": str(len(failed))})
    summary = {"parent_run_id": parent, "tracking_uri": tracking_uri(cfg), "experiment": cfg.tracking.experiment,
               "experiment_id": tracker.experiment_id, "until": "sweep", "report": report["path"],
               "metric": report["metric"], "points": report["points"], "failed": failed, "totals": totals,
               "stages": stage_summaries([prep_record, pretrain_record]),
               "cache_hits": sum(1 for _, r, _ in results if r and r.cache_hit),
               "wall_s": time.perf_counter() - started}
    return summary


def _cost(rec: StageRecord) -> Any:
    from modules.evaluation.sweep_report import StageCost

    carbon = rec.carbon
    return StageCost(rec.label, rec.cache_hit, carbon.emissions_kg, carbon.energy_kwh, carbon.duration_s,
                     *rec.produced())


def write_report(cfg: TransferLabConfig, tracker: Tracker, parent: str, prep_record: PrepRecord,
                 pretrain_record: PretrainRecord, results: list[tuple[Point, FinetuneRecord | None, str | None]]
                 ) -> dict[str, Any]:
    """The learning curve, the tables and break-even as parent-run artifacts and a Prefect artifact."""
    from modules.evaluation.learning_curve import learning_curve_png
    from modules.evaluation.sweep_report import SweepPoint, render_sweep_report, summarize
    from modules.tasks import get_task

    task = get_task(cfg.finetune.task)
    metric = task.headline
    points: list[SweepPoint] = []
    for p, rec, error in results:
        if rec is None:
            points.append(SweepPoint(p.label, p.budget, p.seed, "failed", None, None, None, None, error=error,
                                     requested_budget=_requested(p)))
            continue
        carbon = rec.carbon
        points.append(SweepPoint(p.label, rec.train_examples, p.seed, "ok", rec.metrics.get(f"test/{metric}"),
                                 carbon.emissions_kg, carbon.energy_kwh, carbon.duration_s,
                                 rec.cache_hit, *rec.produced(), rec.run_id,
                                 requested_budget=_requested(p)))
    stage_costs = [_cost(prep_record), _cost(pretrain_record)]
    out = Path(cfg.paths.home) / "runs" / parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    title = (f"data_efficiency: {cfg.model.name} on {cfg.data.name} ({task.name}), "
             f"test {metric} vs labeled examples")
    majority = _majority_level(cfg, prep_record, results)
    learning_curve_png(points, f"test {metric}", title, out / "learning_curve.png",
                       chance=task.chance(prep_record.label_names) if majority is None else majority,
                       chance_label="chance" if majority is None else "majority class")
    text = render_sweep_report(
        f"transferlab sweep: {cfg.experiment_name} ({cfg.model.name}, {cfg.data.name}, {task.name})",
        f"test {metric}", points, stage_costs, ["learning_curve.png"],
        notes=[f"Seeds {list(cfg.sweep.seeds)}; inits {list(cfg.finetune.inits)}; "
               f"strategy {cfg.finetune.strategy}. A cached stage or point costs nothing in this run; "
               "'building the output' is what it cost when it ran."],
        majority=majority,
    )
    (out / "report.md").write_text(text)
    for name in ("report.md", "learning_curve.png"):
        tracker.log_artifact(parent, out / name)
    _publish(cfg, tracker, parent, text)
    rows = summarize(points)
    curve: dict[int, dict[str, float]] = {}
    for row in rows:
        if row["mean"] is not None and row["init"] != "zero_shot":
            curve.setdefault(row["budget"], {})[f"sweep/test_{metric}/{row['init']}"] = row["mean"]
    return {"path": str(out / "report.md"), "metric": metric, "curve": sorted(curve.items()),
            "metrics": {"sweep/points": len(points), "sweep/failed_points": sum(p.status != "ok" for p in points),
                        "sweep/cache_hits": sum(p.cache_hit for p in points)},
            "points": [{"init": p.init, "budget": p.budget, "seed": p.seed, "status": p.status, "metric": p.metric,
                        "cache_hit": p.cache_hit, "emissions_kg": p.emissions_kg, "run_id": p.run_id,
                        "error": p.error} for p in points]}


def _majority_level(cfg: TransferLabConfig, prep_record: PrepRecord,
                    results: list[tuple[Point, FinetuneRecord | None, str | None]]) -> float | None:
    """The majority-class rule's headline test metric, mean over the sweep's (budget, seed)
    training subsets: the floor the report and the curve draw. None without a labeled point."""
    from modules.baselines.classical import load_labeled, majority_scores
    from modules.tasks import HEADLINE

    subsets = sorted({(rec.train_examples if rec else p.budget, p.seed) for p, rec, _ in results
                      if p.init != "zero_shot"})
    if not subsets:
        return None
    labeled = load_labeled(prep_record.path)
    key = f"test/{HEADLINE[cfg.finetune.task]}"
    return sum(majority_scores(labeled, cfg.finetune.task, b, s)[key] for b, s in subsets) / len(subsets)


def _requested(p: Point) -> int | None:
    """The requested budget when clamping changed it (None otherwise)."""
    if p.init == "zero_shot" or p.requested == p.budget:
        return None
    return p.requested if isinstance(p.requested, int) else None


def _publish(cfg: TransferLabConfig, tracker: Tracker, parent: str, text: str) -> None:
    from pipelines.tracking.publish import publish, run_link

    link = run_link(cfg, tracking_uri(cfg), tracker.experiment_id, parent)
    body = "\n".join(line for line in text.splitlines() if not line.startswith("!["))  # images live in MLflow
    publish(f"**{link}** (the learning-curve PNG is an artifact of that run)\n\n{body}\n",
            "data_efficiency sweep: learning curves and MLflow link")


@flow(name="data_efficiency")
def data_efficiency(overrides: list[str] | None = None) -> dict[str, Any]:
    """Pretrain once, fine-tune over sweep.budgets x finetune.inits x sweep.seeds, report."""
    return run_sweep(compose(list(overrides or [])))

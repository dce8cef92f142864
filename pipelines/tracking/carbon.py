"""One codecarbon tracker per stage, quiet, with "missing" kept distinct from zero.

A resumable stage (pretraining) can be killed and run again. Its carbon is the sum over
all attempts: each attempt persists its running totals into the stage's work dir through
an :class:`AttemptLedger` every codecarbon measurement (``carbon.measure_power_secs``),
and the attempt that finishes adds the earlier attempts' last persisted figures. What is
lost is the energy a killed attempt spent after its last measurement (at most
``measure_power_secs`` of work) and anything before its first one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config.schema import CarbonConfig

log = logging.getLogger("transferlab")


@dataclass
class CarbonResult:
    emissions_kg: float | None = None
    energy_kwh: float | None = None
    duration_s: float | None = None
    csv: Path | None = None

    @property
    def missing(self) -> bool:
        return self.emissions_kg is None

    def metrics(self) -> dict[str, float]:
        """MLflow metrics; a figure codecarbon did not produce is left out, never zero."""
        out = {"carbon/emissions_kg": self.emissions_kg, "carbon/energy_kwh": self.energy_kwh,
               "carbon/duration_s": self.duration_s}
        return {k: float(v) for k, v in out.items() if v is not None}

    def as_dict(self) -> dict[str, Any]:
        return {"emissions_kg": self.emissions_kg, "energy_kwh": self.energy_kwh, "duration_s": self.duration_s}

    def plus(self, other: CarbonResult) -> CarbonResult:
        """Figure-wise sum; a figure missing on either side stays missing (never summed as 0)."""
        def add(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a + b

        return CarbonResult(add(self.emissions_kg, other.emissions_kg), add(self.energy_kwh, other.energy_kwh),
                            add(self.duration_s, other.duration_s), self.csv or other.csv)


class AttemptLedger:
    """Running carbon totals of each attempt of a resumable stage, one JSON file per attempt.

    Files are replaced atomically, so a kill at any moment leaves the previous figures.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.attempt = uuid.uuid4().hex[:12]

    def attempt_files(self) -> list[Path]:
        return sorted(self.directory.glob("attempt-*.json")) if self.directory.is_dir() else []

    def earlier(self) -> CarbonResult:
        """The sum of the figures persisted by other attempts (zero if there were none)."""
        total = CarbonResult(0.0, 0.0, 0.0)
        for path in self.attempt_files():
            if path.name == f"attempt-{self.attempt}.json":
                continue
            try:
                data = json.loads(path.read_text())
                total = total.plus(CarbonResult(data["emissions_kg"], data["energy_kwh"], data["duration_s"]))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("carbon figures of an earlier attempt unreadable (%s): %s", path, exc)
        return total

    def persist(self, emissions_kg: float, energy_kwh: float, duration_s: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"attempt-{self.attempt}.json"
        tmp = final.with_suffix(".tmp")
        tmp.write_text(json.dumps({"emissions_kg": emissions_kg, "energy_kwh": energy_kwh, "duration_s": duration_s}))
        os.replace(tmp, final)

    def handler(self):
        """A codecarbon output handler that persists every measurement's running totals."""
        from codecarbon.output_methods.base_output import BaseOutput

        ledger = self

        class _Persist(BaseOutput):
            def out(self, total, delta) -> None:  # flush() and stop()
                ledger.persist(float(total.emissions), float(total.energy_consumed), float(total.duration))

            def live_out(self, total, delta) -> None:  # every measurement (api_call_interval=1)
                self.out(total, delta)

        return _Persist()


def warm_up(cfg: CarbonConfig) -> None:
    """Run codecarbon's one-off hardware probe now, in the background.

    The first tracker of a process probes the hardware, and codecarbon keeps what it found
    for the process's later trackers. The probe is slow: py-cpuinfo reads the CPU model in
    a Python subprocess of its own (1.2 s on 2 cores). On a cached rerun it was the longest
    wait of the whole flow, inside the first stage's run. Started before the flow, it
    overlaps the temporary Prefect server's start-up instead.

    The probe is a tracker started and stopped at once in a temp dir. Its failures are
    ignored: the stages' own trackers report them.
    """
    def probe() -> None:
        try:
            with tempfile.TemporaryDirectory(prefix="transferlab-carbon-") as tmp:
                tracker = _tracker(cfg, Path(tmp))
                tracker.start()
                tracker.stop()
        except Exception:
            pass

    threading.Thread(target=probe, name="codecarbon-warm-up", daemon=True).start()


def _tracker(cfg: CarbonConfig, output_dir: Path, ledger: AttemptLedger | None = None):
    from codecarbon import OfflineEmissionsTracker

    persist: dict[str, Any] = {} if ledger is None else {"output_handlers": [ledger.handler()], "api_call_interval": 1}

    # codecarbon logs at INFO before it applies its own log_level; silence it up front.
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    return OfflineEmissionsTracker(
        country_iso_code=cfg.country_iso_code,
        output_dir=str(output_dir),
        measure_power_secs=cfg.measure_power_secs,
        tracking_mode=cfg.tracking_mode,
        log_level="error",
        save_to_file=True,
        allow_multiple_runs=True,
        project_name="transferlab",
        on_csv_write="update",  # one row per attempt even if flushed
        **persist,
    )


@contextmanager
def track_carbon(cfg: CarbonConfig, output_dir: Path, ledger: AttemptLedger | None = None) -> Iterator[CarbonResult]:
    """Measure the block; the yielded result is filled in when the block exits.

    codecarbon's start/stop swallow their own exceptions and ``stop()`` may return None;
    both end up as a result whose figures are None ("missing"), with a warning. With a
    ``ledger``, this attempt's running totals are persisted as they are measured and the
    result includes the earlier attempts' figures (see the module docstring).
    """
    result = CarbonResult()
    if not cfg.enabled:
        yield result
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    earlier = ledger.earlier() if ledger is not None else None
    tracker = None
    try:
        tracker = _tracker(cfg, output_dir, ledger)
        tracker.start()
    except Exception as exc:  # never let carbon accounting sink a stage
        log.warning("carbon tracking unavailable: %s", exc)
        tracker = None
    try:
        yield result
    finally:
        if tracker is not None:
            emissions = None
            try:
                emissions = tracker.stop()
            except Exception as exc:
                log.warning("carbon tracker failed to stop: %s", exc)
            data = getattr(tracker, "final_emissions_data", None)
            if emissions is None or data is None:
                log.warning("codecarbon returned no figures for this stage; recorded as missing")
            else:
                result.emissions_kg = float(emissions)
                result.energy_kwh = float(data.energy_consumed)
                result.duration_s = float(data.duration)
                if earlier is not None and earlier.emissions_kg:
                    log.info("carbon: adding %.3g g CO2e persisted by earlier attempts", earlier.emissions_kg * 1000)
                if earlier is not None:
                    total = result.plus(earlier)
                    result.emissions_kg, result.energy_kwh, result.duration_s = (
                        total.emissions_kg, total.energy_kwh, total.duration_s)
            csv = output_dir / "emissions.csv"
            result.csv = csv if csv.exists() else None

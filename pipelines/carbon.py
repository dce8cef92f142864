"""One codecarbon tracker per stage, quiet, with "missing" kept distinct from zero."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _tracker(cfg: dict[str, Any], output_dir: Path):
    from codecarbon import OfflineEmissionsTracker

    # codecarbon logs at INFO before it applies its own log_level; silence it up front.
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    return OfflineEmissionsTracker(
        country_iso_code=cfg["country_iso_code"],
        output_dir=str(output_dir),
        measure_power_secs=cfg["measure_power_secs"],
        tracking_mode=cfg["tracking_mode"],
        log_level="error",
        save_to_file=True,
        allow_multiple_runs=True,
        project_name="transferlab",
    )


@contextmanager
def track_carbon(cfg: dict[str, Any], output_dir: Path) -> Iterator[CarbonResult]:
    """Measure the block; the yielded result is filled in when the block exits.

    codecarbon's start/stop swallow their own exceptions and ``stop()`` may return None;
    both end up as a result whose figures are None ("missing"), with a warning.
    """
    result = CarbonResult()
    if not cfg["enabled"]:
        yield result
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    tracker = None
    try:
        tracker = _tracker(cfg, output_dir)
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
            csv = output_dir / "emissions.csv"
            result.csv = csv if csv.exists() else None

"""Carbon accounting: real figures when codecarbon has them, 'missing' when it does not."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

import pipelines.tracking.carbon as carbon
from pipelines.config.schema import CarbonConfig
from pipelines.tracking.carbon import track_carbon

CFG = CarbonConfig(enabled=True, country_iso_code="USA", measure_power_secs=1, tracking_mode="machine")


def test_real_tracker_measures_positive_emissions(tmp_path: Path) -> None:
    with track_carbon(CFG, tmp_path) as result:
        end = time.time() + 0.5
        while time.time() < end:
            sum(range(1000))
    assert result.emissions_kg is not None and result.emissions_kg > 0
    assert result.energy_kwh > 0 and result.duration_s > 0
    assert result.csv is not None and result.csv.exists()
    assert set(result.metrics()) == {"carbon/emissions_kg", "carbon/energy_kwh", "carbon/duration_s"}


class _SilentTracker:
    """Behaves like codecarbon when it fails: stop() swallows the error and returns None."""

    final_emissions_data = None

    def __init__(self, **kwargs) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        return None


def test_stop_returning_none_is_missing_not_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(carbon, "_tracker", lambda cfg, out: _SilentTracker())
    with track_carbon(CFG, tmp_path) as result:
        pass
    assert result.missing and result.emissions_kg is None
    assert result.metrics() == {}


def test_disabled_tracker_records_nothing(tmp_path: Path) -> None:
    with track_carbon(replace(CFG, enabled=False), tmp_path) as result:
        pass
    assert result.missing and not (tmp_path / "emissions.csv").exists()

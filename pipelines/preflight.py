"""Input checks that run before any work, so bad input never leaves state behind."""

from __future__ import annotations

from typing import Any

from pipelines.errors import UserError


def check_inputs(cfg: dict[str, Any]) -> None:
    """Raise ``UserError`` (one line) for missing/empty files or absent columns."""
    from modules.data.errors import DataError
    from pipelines.model_init import check_init

    check_init(cfg)  # model.init: exists, config.json + safetensors, no unrequested custom code
    if cfg["data"]["source"] != "local":
        return
    from modules.data.local import check_local

    try:
        check_local(cfg["data"])
    except DataError as exc:
        raise UserError(str(exc)) from exc

"""Playwright steps that drive the Prefect and MLflow web UIs the way a user does.

A helper module (not a test file): tests/test_browser.py composes these steps. Selectors are
roles and visible text, not CSS classes, so a restyled UI still passes while a changed
workflow (a renamed button, a missing parameter field) fails. Each step takes its own
screenshot on failure, because a headless browser failure is otherwise unreadable.

Versions the selectors were written against: Prefect 3.8.8 (its default "V2" UI, which `/`
redirects to), MLflow 3.17.2, Debian chromium 156 driven by playwright 1.65.2.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from playwright.sync_api import Browser, Error, Page, Playwright

VIEWPORT = {"width": 1400, "height": 900}
"""Screenshot size: wide enough that Prefect's and MLflow's sidebars and content both fit."""

# Prefect state names as its run-page badge writes them; the terminal bad ones end the wait.
_BAD_STATES = ("Failed", "Crashed", "Cancelled", "Cancelling", "TimedOut")
_STATE_BADGE = re.compile(
    r"^(Scheduled|Late|Pending|Running|Retrying|AwaitingRetry|Paused|Suspended|Completed|"
    + "|".join(_BAD_STATES)
    + r")$"
)


class UiStepError(AssertionError):
    """A UI step did not reach the state it waited for; the message names the screenshot."""


def chromium_path() -> Path:
    """Debian's chromium (no Playwright browser download is possible here), overridable by env."""
    path = Path(os.environ.get("TRANSFERLAB_CHROMIUM", "/usr/bin/chromium"))
    if not path.is_file() or not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"chromium not found at {path}: install Debian's chromium (apt-get install chromium) "
            "or point TRANSFERLAB_CHROMIUM at a chromium binary"
        )
    return path


def launch_browser(playwright: Playwright) -> Browser:
    """Headless chromium from the system, failing clearly when it is missing."""
    return playwright.chromium.launch(executable_path=str(chromium_path()), headless=True)


def new_page(browser: Browser, timeout_s: float = 60.0) -> Page:
    """A page at the screenshot viewport; generous default timeout for a loaded 2-core box."""
    page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
    page.set_default_timeout(timeout_s * 1000)
    return page


def _failure_shot(screenshot: Path | None) -> Path | None:
    """`<stem>-failed.png` next to `screenshot`, removing one a previous run left behind."""
    if screenshot is None:
        return None
    path = screenshot.with_name(screenshot.stem + "-failed.png")
    path.unlink(missing_ok=True)
    return path


def _fail(page: Page, failure_shot: Path | None, message: str) -> UiStepError:
    """Screenshot the page as it is and build the error that names the screenshot."""
    if failure_shot is not None:
        failure_shot.parent.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(failure_shot))
            message += f" (screenshot: {failure_shot})"
        except Error as exc:  # a crashed page cannot be shot; keep the original message
            message += f" (no screenshot: {exc})"
    return UiStepError(message)


def prefect_custom_run(
    page: Page,
    prefect_url: str,
    overrides: list[str],
    *,
    deployment: str = "transfer_learning",
    timeout_s: float = 300.0,
    screenshot: Path | None = None,
) -> str:
    """Deployments -> deployment -> Run -> Custom run, fill `overrides`, submit, wait for Completed.

    Returns the flow run id (read from the run page's URL) so the caller can check through the
    API that the run really received the overrides. `screenshot` (if given) is written once the
    run completed, showing the Parameters tab; on failure `<screenshot stem>-failed.png` instead.
    """
    failure_shot = _failure_shot(screenshot)
    try:
        page.goto(prefect_url.rstrip("/") + "/")  # redirects to the default (V2) dashboard
        page.get_by_role("link", name="Deployments", exact=True).click()
        # Deployment and flow share the name, so the row holds two equal links; the deployment's
        # is the one that routes to /deployments/deployment/<id>.
        page.locator('a[href*="/deployments/deployment/"]').filter(
            has_text=re.compile(rf"^{re.escape(deployment)}$")
        ).first.click()
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Custom run").click()
        page.get_by_role("heading", name="Parameters").wait_for()

        # An optional list parameter renders as a label plus a fieldset of type tabs
        # ("list" / "None", None selected); the label's `for` points at nothing, so scope by
        # the nearest ancestor that holds both the label and a fieldset.
        field = page.get_by_text("overrides (Optional)", exact=True).locator(
            "xpath=ancestor::div[.//fieldset][1]"
        )
        field.get_by_role("tab", name="list", exact=True).click()
        for i, override in enumerate(overrides):
            field.get_by_role("button", name="Add item").click()
            field.get_by_role("textbox").nth(i).fill(override)
        page.get_by_role("button", name="Submit", exact=True).click()

        # Submit lands back on the deployment page with a toast linking to the new run.
        page.get_by_role("link", name="View run").first.click()
        page.wait_for_url(re.compile(r"/runs/flow-run/[0-9a-f-]{36}"))
    except Error as exc:
        raise _fail(page, failure_shot, f"Prefect custom run could not be started: {exc}") from exc
    run_id = re.search(r"/flow-run/([0-9a-f-]{36})", page.url).group(1)  # type: ignore[union-attr]

    # Watch the run's state badge, but look only every 10 s: the live run page redraws its
    # timeline continuously, and software rendering would take a core from the training.
    run_url = page.url
    badge = page.get_by_role("main").get_by_text(_STATE_BADGE).first
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        if page.url != run_url:
            page.goto(run_url)
        try:
            state = badge.inner_text(timeout=10_000).strip()
        except Error:
            state = "?"
        if state == "Completed":
            break
        if state in _BAD_STATES:
            raise _fail(page, failure_shot, f"Prefect flow run {run_id} ended {state}")
        page.goto("about:blank")
        time.sleep(10.0)
    else:
        raise _fail(
            page, failure_shot, f"Prefect flow run {run_id} still {state!r} after {timeout_s:.0f}s"
        )

    if screenshot is not None:
        page.get_by_role("tab", name="Parameters", exact=True).click()
        page.get_by_text(overrides[-1]).first.wait_for()  # the JSON view shows the override
        try:  # let the "scheduled to start now" toast fade so it does not cover the shot
            page.get_by_role("link", name="View run").wait_for(state="hidden", timeout=15_000)
        except Error:
            pass
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
        # The run's summary artifact: headline metrics, stages, the link to MLflow.
        page.get_by_role("tab", name="Artifacts", exact=True).click()
        page.get_by_text("transferlab-summary").first.wait_for()
        page.screenshot(path=str(screenshot.with_name(screenshot.stem + "_summary.png")))
    return run_id


def mlflow_show_metric(
    page: Page,
    mlflow_url: str,
    run_name: str,
    *,
    experiment: str = "transferlab",
    parent_run_name: str | None = None,
    metric: str = "test/accuracy",
    screenshot: Path | None = None,
) -> str:
    """Experiments -> `experiment` -> (expand `parent_run_name`) -> `run_name`; the metric's value.

    Returns the value text as the run page's metrics table shows it (e.g. "0.8125"). Child runs
    are only listed under their expanded parent, hence `parent_run_name`. `screenshot` (if
    given) shows the run page scrolled to its metrics table.
    """
    failure_shot = _failure_shot(screenshot)
    try:
        page.goto(mlflow_url.rstrip("/") + "/#/experiments")
        # MLflow 3 opens experiments in its GenAI (traces) layout by default; the sidebar's
        # "Model training" switch gives the classic runs table.
        page.get_by_role("button", name="Model training", exact=True).click()
        page.get_by_role("link", name=experiment, exact=True).first.click()
        page.get_by_role("heading", name="Runs", exact=True).wait_for()
        if parent_run_name is not None:
            # The expander is the only (unnamed) button in the run-name cell of the parent row.
            page.get_by_role("gridcell").filter(
                has=page.get_by_role("link", name=parent_run_name, exact=True)
            ).get_by_role("button").first.click()
        page.get_by_role("link", name=run_name, exact=True).first.click()
        page.get_by_role("heading", name=run_name, exact=True).wait_for()
        _close_assistant(page)
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=metric, exact=True))
        row.first.scroll_into_view_if_needed()
        value = row.first.get_by_role("cell").nth(1).inner_text().strip()
    except Error as exc:
        raise _fail(page, failure_shot, f"MLflow run {run_name!r} / {metric}: {exc}") from exc
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    return value


def _close_assistant(page: Page) -> None:
    """Close MLflow 3.17's "MLflow Assistant" side panel (open by default) so the run fits the shot."""
    panel_close = page.get_by_role("button", name="Close", exact=True)
    if panel_close.count() and page.get_by_text("MLflow Assistant").count():
        panel_close.first.click()


def mlflow_runs_table(
    page: Page,
    link: str,
    parent_run_name: str,
    child_run_name: str,
    *,
    columns: tuple[str, ...] = ("test/accuracy", "test/accuracy_gain"),
    screenshot: Path | None = None,
) -> str:
    """Open `link` (the experiment link `up` prints and the run summary carries) as a newcomer.

    Waits for the runs table in MLflow's model-training layout: the parent run's row, the
    saved view's `columns`, and, once the row is expanded, `child_run_name`; fails if MLflow
    3's GenAI overview ("Detect Issues", traces) shows instead. Returns the URL it settled on.
    `screenshot` (if given) shows the table with the parent expanded.
    """
    failure_shot = _failure_shot(screenshot)
    try:
        page.goto(link)
        page.get_by_role("heading", name="Runs", exact=True).wait_for()
        parent = page.get_by_role("link", name=parent_run_name, exact=True)
        parent.first.wait_for()
        for column in columns:
            page.get_by_text(column, exact=True).first.wait_for()
        if "/overview" in page.url or page.get_by_text("Detect Issues").count():
            raise _fail(page, failure_shot, f"MLflow showed its GenAI overview for {link}: {page.url}")
        page.get_by_role("gridcell").filter(has=parent).get_by_role("button").first.click()
        page.get_by_role("link", name=child_run_name, exact=True).first.wait_for()
        _close_assistant(page)
    except Error as exc:
        raise _fail(page, failure_shot, f"MLflow runs table at {link}: {exc}") from exc
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    return page.url

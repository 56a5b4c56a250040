"""Prefect's own tools on docproc: the `prefect` CLI, `prefect deploy` and the UI in a real browser.

Everything runs against the session's real Prefect server (tests/fixtures/prefect_server.py)
after `docproc pool apply` (the ``docproc_pool`` fixture) and one run of the critical
deployment, submitted with `docproc submit` and completed by a real `prefect worker`. The
browser is Debian's chromium (scripts/tools/chromium.sh, run by `make tools`) driven by
Playwright's Python package; Playwright's own browser download is never used.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

from docproc.queues import QUEUES, WORK_POOL_NAME
from tests.fixtures.prefect_server import PrefectServer
from tests.processes import stop

REPO = Path(__file__).resolve().parents[1]
DOCPROC = Path(sys.executable).with_name("docproc")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WORKER = [sys.executable, "-m", "prefect", "worker", "start"]
RUN_TIMEOUT = 600.0
PAGE_TIMEOUT_MS = 120_000
ARTIFACT_KEYS = {
    "docproc-progress": "progress",
    "docproc-run-documents": "table",
    "docproc-run-report": "markdown",
}


@dataclass(frozen=True)
class CompletedRun:
    id: UUID
    name: str
    artifacts: dict[str, UUID]  # key -> id


def _prefect(server: PrefectServer, *args: str, cwd: Path = REPO, timeout: float = 300) -> str:
    """Prefect's own CLI against the session server; wide columns so tables are not truncated."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=server.env(COLUMNS="250", PREFECT_CLI_WRAP_LINES="false"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"prefect {' '.join(args)} exited {done.returncode}:\n{output}"
    assert "Unprocessable" not in output, output
    return output


def _rows(table: str) -> list[list[str]]:
    """The cells of a rich table's body rows."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in table.splitlines()
        if line.startswith("│")
    ]


@pytest.fixture(scope="module")
def completed_run(
    prefect_server: PrefectServer, docproc_pool: str, tmp_path_factory: pytest.TempPathFactory
) -> CompletedRun:
    """One run of the critical deployment: one letter processed, one corrupt PDF quarantined."""
    tmp = tmp_path_factory.mktemp("prefect-tools")
    source = tmp / "in"
    source.mkdir()
    for name in ("letter-globex.txt", "invalid.pdf"):
        shutil.copyfile(REPO / "samples" / name, source / name)
    env = {k: v for k, v in prefect_server.env().items() if not k.startswith("DOCPROC_")}
    env["DOCPROC_WORKERS"] = "1"
    submitted = subprocess.run(
        [str(DOCPROC), "submit", str(source), "--priority", "critical", "--out", str(tmp / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_id = UUID(submitted.stdout.split()[2])

    log_path = tmp / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [
                *WORKER,
                "--pool",
                WORK_POOL_NAME,
                "--type",
                "process",
                "--work-queue",
                "critical",
                "--run-once",
            ],
            env=env,
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            worker.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop(worker, timeout=30)

    flow_run = httpx.get(f"{prefect_server.api_url}/flow_runs/{run_id}", timeout=30).json()
    state = (flow_run.get("state") or {}).get("type")
    if state != "COMPLETED":
        pytest.fail(
            f"run {run_id} ended {state}; worker log:\n{log_path.read_text(errors='replace')[-5000:]}"
        )
    found = httpx.post(
        f"{prefect_server.api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [str(run_id)]}}},
        timeout=30,
    ).json()
    return CompletedRun(run_id, flow_run["name"], {a["key"]: UUID(a["id"]) for a in found})


# -- the prefect CLI ---------------------------------------------------------------------------


def test_prefect_cli_lists_docproc_pool_queues_deployments_runs_and_artifacts(
    prefect_server: PrefectServer, completed_run: CompletedRun
) -> None:
    pools = _rows(_prefect(prefect_server, "work-pool", "ls"))
    assert any(row[0] == WORK_POOL_NAME and row[1] == "process" for row in pools), pools

    queues = {
        row[0]: row[1:]
        for row in _rows(_prefect(prefect_server, "work-queue", "ls", "--pool", WORK_POOL_NAME))
    }
    for spec in QUEUES.values():
        limit = "None" if spec.concurrency_limit is None else str(spec.concurrency_limit)
        assert queues[spec.name] == [str(spec.priority), limit], queues

    deployment_rows = _rows(_prefect(prefect_server, "deployment", "ls"))
    on_pool = {row[0] for row in deployment_rows if row[2] == WORK_POOL_NAME}
    wanted = {f"process-documents/{q.name}" for q in QUEUES.values()} | {"inbox-scan/inbox-scan"}
    assert wanted <= on_pool, deployment_rows

    runs = {row[0]: row for row in _rows(_prefect(prefect_server, "flow-run", "ls", "--limit", "50"))}
    row = runs[str(completed_run.id)]
    assert row[1:4] == ["process-documents", completed_run.name, "COMPLETED"], row

    artifacts = {row[1]: row[2] for row in _rows(_prefect(prefect_server, "artifact", "ls"))}
    for key, kind in ARTIFACT_KEYS.items():
        assert artifacts.get(key) == kind, artifacts

    report = _prefect(prefect_server, "artifact", "inspect", "docproc-run-report", "--limit", "1")
    assert str(completed_run.id) in report
    assert "1 processed, 0 skipped, 1 quarantined" in report


# -- prefect deploy --------------------------------------------------------------------------------


def _pool_deployments(server: PrefectServer) -> dict[str, dict[str, object]]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
        found = client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[WORK_POOL_NAME]))
        )
        return {
            d.name: {
                "id": d.id,
                "queue": d.work_queue_name,
                "pull_steps": d.pull_steps,
                "job_variables": d.job_variables,
                "schedules": [getattr(s.schedule, "interval", None) for s in d.schedules],
            }
            for d in found
        }


def test_prefect_deploy_all_on_the_pool_docproc_applied(
    prefect_server: PrefectServer, docproc_pool: str
) -> None:
    """`prefect deploy --all` in the repository updates the very deployments `docproc pool apply` made."""
    before = _pool_deployments(prefect_server)
    output = _prefect(prefect_server, "--no-prompt", "deploy", "--all", timeout=600)
    for name in [f"process-documents/{q.name}" for q in QUEUES.values()] + ["inbox-scan/inbox-scan"]:
        assert f"Deployment '{name}' successfully created" in output, output
    after = _pool_deployments(prefect_server)
    assert {k: v["id"] for k, v in after.items()} == {k: v["id"] for k, v in before.items()}
    assert set(after) == {"critical", "standard", "bulk", "inbox-scan"}
    for name, deployment in after.items():
        queue = "standard" if name == "inbox-scan" else name
        assert deployment["queue"] == queue
        # Nothing to pull: not the deploying machine's directory, which a worker pod lacks.
        assert deployment["pull_steps"] == []
        assert deployment["job_variables"]["priority_class_name"] == f"docproc-{queue}"  # type: ignore[index]
    assert after["inbox-scan"]["schedules"] == [timedelta(seconds=300)]


# -- the UI in a real browser --------------------------------------------------------------------


@pytest.fixture
def page() -> Iterator[Page]:
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: run `make tools` (scripts/tools/chromium.sh)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1100})
        finally:
            browser.close()


class _Console:
    """The page's console errors, uncaught exceptions and failed requests, for a failure message."""

    def __init__(self, page: Page) -> None:
        self.lines: list[str] = []
        page.on(
            "console",
            lambda m: self.lines.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: self.lines.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.lines.append(f"request failed: {r.url} {r.failure}"))
        page.on(
            "response", lambda r: self.lines.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None
        )

    def open(self, page: Page, url: str, ready: str, server: PrefectServer) -> None:
        """Go to ``url`` and wait until the text ``ready`` shows; fail with what the page logged."""
        try:
            page.goto(url, wait_until="domcontentloaded", timeout=PAGE_TIMEOUT_MS)
            page.get_by_text(ready, exact=False).first.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
        except PlaywrightError as exc:
            logged = "\n".join(self.lines) or "(nothing logged)"
            pytest.fail(
                f"{url} did not show {ready!r}: {exc}\nbrowser console:\n{logged}\n"
                f"server log:\n{server.log_tail(2000)}"
            )


def test_ui_is_served_by_the_server(prefect_server: PrefectServer) -> None:
    settings = httpx.get(f"{prefect_server.ui_url}/ui-settings", timeout=30).json()
    assert settings["api_url"] == prefect_server.api_url  # the UI calls this server, not port 4200
    index = httpx.get(f"{prefect_server.ui_url}/runs", headers={"Accept": "text/html"}, timeout=30)
    assert index.status_code == 200
    assert "<!DOCTYPE html>" in index.text[:200]
    assert (prefect_server.ui_static_dir / "v1" / "index.html").is_file()


def test_ui_shows_the_completed_run_and_its_artifacts(
    prefect_server: PrefectServer, completed_run: CompletedRun, page: Page, tmp_path: Path
) -> None:
    console = _Console(page)
    ui = prefect_server.ui_url
    assert set(completed_run.artifacts) == set(ARTIFACT_KEYS)

    # The run's page, at the URL `docproc submit` prints: its name, state and deployment.
    console.open(page, f"{ui}/runs/flow-run/{completed_run.id}", completed_run.name, prefect_server)
    page.get_by_text("Completed", exact=True).first.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.get_by_text("Artifacts", exact=True).click()  # the run page's tab
    for key in ARTIFACT_KEYS:
        page.get_by_text(key, exact=True).first.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.screenshot(path=tmp_path / "flow-run.png")
    # The V2 UI, which the server offers first to a browser with no saved preference.
    console.open(page, f"{ui}/v2/runs/flow-run/{completed_run.id}", completed_run.name, prefect_server)
    page.get_by_text("Completed", exact=True).first.wait_for(timeout=PAGE_TIMEOUT_MS)

    # The report: rendered markdown, with the quarantined document and its reason in a table.
    console.open(
        page,
        f"{ui}/artifacts/artifact/{completed_run.artifacts['docproc-run-report']}",
        f"docproc run {completed_run.id}",
        prefect_server,
    )
    assert page.locator("h1", has_text=f"docproc run {completed_run.id}").count() == 1
    quarantined = page.locator("tr", has_text="invalid.pdf").first
    assert "corrupt" in quarantined.inner_text()
    assert page.get_by_text("1 processed, 0 skipped, 1 quarantined").count() >= 1
    page.screenshot(path=tmp_path / "report-artifact.png")

    # The documents table: one row per document, with its status.
    console.open(
        page,
        f"{ui}/artifacts/artifact/{completed_run.artifacts['docproc-run-documents']}",
        "letter-globex.txt",
        prefect_server,
    )
    rows = {r.split("\t")[0].strip(): r for r in page.locator("tr").all_inner_texts()}
    assert "processed" in rows["letter-globex.txt"], rows
    assert "quarantined" in rows["invalid.pdf"], rows

    # Progress: all documents done.
    console.open(
        page,
        f"{ui}/artifacts/artifact/{completed_run.artifacts['docproc-progress']}",
        "2/2 documents done, 1 quarantined",
        prefect_server,
    )
    page.get_by_text("Progress: 100%").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    print(f"screenshots: {tmp_path / 'flow-run.png'} {tmp_path / 'report-artifact.png'}")

"""Browser fixtures: a real control plane, a real agent (process driver) and headless Chromium."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.conftest import _cleanup_units, e2e_admin, e2e_server, wait_for
from tests.support.agent import AgentProcess
from tests.support.gql import Client
from tests.support.server import ServerProcess

__all__ = ["e2e_admin", "e2e_server"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def web_agent(
    e2e_server: ServerProcess, e2e_admin: Client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    """An agent of the admin's organization on the process driver, online."""
    secret = e2e_admin('mutation { createApiKey(name: "web-agent", kind: EXECUTOR) { secret } }')[
        "createApiKey"
    ]["secret"]
    proc = AgentProcess(
        workdir=tmp_path_factory.mktemp("web-agent"),
        server_url=e2e_server.url,
        api_key=secret,
        driver="process",
    )
    proc.start()
    try:
        wait_for(
            lambda: any(
                e["name"] == proc.name and e["status"] == "ONLINE"
                for e in e2e_admin("{ executors { name status } }")["executors"]
            ),
            timeout=60,
            what="agent online",
        )
        yield proc
    finally:
        proc.stop()
        _cleanup_units(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/install-browser.sh)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield instance
        instance.close()


# Runs first in every document: reports each Content-Security-Policy (or Trusted Types)
# violation the page raises to the test, whichever page and whenever.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__reportCspViolation(
    `${e.effectiveDirective} refused ${e.blockedURI || "inline"} (${e.sourceFile || "?"}:` +
    `${e.lineNumber}) on ${document.location.href}: ${e.sample}`);
}, true);
"""


@pytest.fixture
def csp_violations() -> list[str]:
    """The CSP violations Chromium reported in this test; `page` fails the test if any is left."""
    return []


@pytest.fixture
def page(browser: Browser, csp_violations: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    context.set_default_timeout(15_000)

    def report(violation: str) -> None:
        csp_violations.append(violation)

    context.expose_function("__reportCspViolation", report)
    context.add_init_script(CSP_LISTENER)
    tab = context.new_page()
    tab.on(
        "console",
        lambda message: (
            csp_violations.append(message.text)
            if "Content Security Policy" in message.text or "Trusted Type" in message.text
            else None
        ),
    )
    yield tab
    context.close()
    assert not csp_violations, f"Chromium reported CSP violations: {csp_violations}"


def screenshot(page: Page, name: str) -> None:
    """Save a full-page screenshot of the current page into test-artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

"""The node page's Logs tab in Chromium, fed by a real litecoind under a real agent: initial
tail, live lines within 2 s, the level filter, pause/resume/clear, auto-scroll that stops when
the reader scrolls up, lines shown as text (never markup), and the session ending (the agent
stops tailing) when the reader leaves the tab."""

import time

from playwright.sync_api import Page, expect

from tests.e2e.conftest import wait_for
from tests.e2e.litecoin_nodes import wait_phase
from tests.e2e.test_agent_litecoin import litecoin_spec
from tests.e2e.test_logs_e2e import agent_records, mine_one, node_log, written_at
from tests.support.agent import AgentProcess
from tests.support.fleet import CREATE_NODE, Org
from tests.support.gql import Client
from tests.support.server import ServerProcess
from tests.web.conftest import screenshot
from tests.web.helpers import sign_in_as


def _executor_id(admin: Client, agent: AgentProcess) -> str:
    executors = admin("{ executors { id name } }")["executors"]
    return next(e["id"] for e in executors if e["name"] == agent.name)


def test_logs_tab_shows_a_real_litecoinds_lines_live(
    page: Page, e2e_server: ServerProcess, e2e_admin: Client, web_agent: AgentProcess
) -> None:
    name = "ltc-logtab"
    node_id = e2e_admin(
        CREATE_NODE,
        {"input": {"executorId": _executor_id(e2e_admin, web_agent), "name": name,
                   "spec": litecoin_spec()}},
    )["createNode"]["id"]  # fmt: skip
    org = Org("", "", e2e_admin, e2e_admin, e2e_server.url)
    wait_phase(org, node_id, "RUNNING")
    path = node_log(web_agent, name)
    started = len(agent_records(web_agent, "logs.session_started"))

    sign_in_as(page, e2e_server.url, e2e_admin)
    page.goto(f"{e2e_server.url}/nodes/{node_id}")
    box = page.locator("[data-logs-lines]")
    expect(box).to_be_hidden()
    page.get_by_role("tab", name="Logs").click()
    expect(page.get_by_role("tabpanel", name="Logs")).to_be_visible()
    expect(page.get_by_label("Process")).to_have_value("node")
    page.get_by_label("Initial lines").fill("1000")
    page.get_by_label("Initial lines").press("Enter")
    expect(box).to_contain_text("Litecoin Core version", timeout=20_000)
    expect(page.locator("[data-logs-status]")).to_have_text("Live.")

    # A line litecoind writes now shows within 2 s.
    block = mine_one(web_agent, name)
    written_at(path, f"new best={block}")
    expect(box).to_contain_text(f"new best={block}", timeout=2_000)

    # Lines are text: markup in a line is shown, not run.
    with path.open("a") as f:
        f.write("<img src=x onerror=\"document.title='pwned'\"> <b>bold?</b>\n")
    expect(box).to_contain_text("<img src=x onerror=", timeout=5_000)
    assert box.locator("img, b").count() == 0
    assert page.title() != "pwned"

    # Auto-scroll follows the end, and stops once the reader scrolls up.
    with path.open("a") as f:
        f.writelines(f"filler line {i}\n" for i in range(150))
    expect(box).to_contain_text("filler line 149", timeout=5_000)
    assert box.evaluate("b => b.scrollTop + b.clientHeight >= b.scrollHeight - 8")
    box.evaluate("b => { b.scrollTop = 0; b.dispatchEvent(new Event('scroll')); }")
    with path.open("a") as f:
        f.writelines(f"more line {i}\n" for i in range(50))
    expect(box).to_contain_text("more line 49", timeout=5_000)
    assert box.evaluate("b => b.scrollTop") == 0

    # A burst over the session's rate (200 lines a second) is cut, visibly.
    with path.open("a") as f:
        f.writelines(f"burst line {i}\n" for i in range(1000))
    expect(box.locator(".log-dropped")).to_contain_text("lines dropped", timeout=5_000)
    expect(box).to_contain_text("burst line 0")
    time.sleep(1.5)  # the rate's budget refills
    with path.open("a") as f:
        f.write("after-burst line\n")
    expect(box).to_contain_text("after-burst line", timeout=5_000)

    # Pause holds new lines back; Resume shows them; Clear empties the view.
    page.get_by_role("button", name="Pause").click()
    with path.open("a") as f:
        f.write("while-paused line\n")
    expect(page.locator("[data-logs-status]")).to_contain_text("Paused (1 new", timeout=5_000)
    expect(box).not_to_contain_text("while-paused line")
    page.get_by_role("button", name="Resume").click()
    expect(box).to_contain_text("while-paused line")
    page.get_by_role("button", name="Clear").click()
    expect(box.locator(".log-line")).to_have_count(0)

    # The level filter: from warn up, plain (info) and debug lines are left out by the agent.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    page.get_by_label("Minimum level").select_option("warn")
    expect(page.locator("[data-logs-status]")).to_have_text("Live.", timeout=10_000)
    with path.open("a") as f:
        f.write(f"{stamp} [net] a-debug-line\n{stamp} plain-info-line\n")
        f.write(f"{stamp} [warning] a-warn-line\n")
    expect(box).to_contain_text("a-warn-line", timeout=5_000)
    expect(box).not_to_contain_text("a-debug-line")
    expect(box).not_to_contain_text("plain-info-line")
    expect(box).not_to_contain_text("Litecoin Core version")
    screenshot(page, "10-node-logs")
    assert set(box.locator(".log-line").evaluate_all("ls => ls.map(l => l.dataset.level)")) <= {
        "warn",
        "error",
    }

    # Leaving the tab ends the session: the agent stops tailing at once.
    page.get_by_role("tab", name="Overview").click()
    wait_for(
        lambda: len(agent_records(web_agent, "logs.session_stopped")) >= started + 3,
        timeout=10,
        what="the agent stopping every session of this page",
    )

"""The nodes page a numbered page at a time (issue 8: one response of every node cost ~200 CPU
ms at 1,000 nodes, and nodes past 1,000 were silently cut): 100 rows by default, a page size
from a fixed set, "Rows a-b of N", Previous and Next keeping the filters, the sort and the page
size, a bad page size or page number a 400 with the form, a page past the last the last. Over
HTTP against a real server, SQLite and PostgreSQL."""

import html
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.fleet import LITECOIN_SPEC, FakeExecutor, Org, make_org
from tests.support.gql import Client
from tests.support.server import ServerProcess
from tests.web.forms import raw_get
from tests.web.helpers import create_node

NODES = 120
NAMES = [f"n-{i:03d}" for i in range(NODES)]
ROW_NAME = re.compile(r'<tr data-node-id="[^"]+" data-node-name="([^"]+)"')
RANGE = re.compile(r'id="nodes-range">([^<]*)<')
ERROR = re.compile(r'id="page-error">([^<]*)<')


@dataclass(frozen=True)
class Fleet:
    org: Org
    executor: FakeExecutor


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, system_admin: Client) -> Fleet:
    """An organization of its own with 120 never-observed nodes on one executor."""
    org = make_org(server.url, system_admin)
    executor = FakeExecutor(server.url, org.executor_key())
    executor.sync()
    for name in NAMES:
        create_node(org, executor, name, LITECOIN_SPEC)
    return Fleet(org, executor)


@dataclass(frozen=True)
class Page:
    status: int
    text: str

    @property
    def names(self) -> list[str]:
        return ROW_NAME.findall(self.text)

    @property
    def range(self) -> str:
        found = RANGE.search(self.text)
        return found.group(1) if found else ""

    @property
    def error(self) -> str:
        found = ERROR.search(self.text)
        return html.unescape(found.group(1)) if found else ""

    def link(self, rel: str) -> str | None:
        found = re.search(rf'<a class="btn" href="([^"]+)" rel="{rel}">', self.text)
        return html.unescape(found.group(1)) if found else None


def shown(first: int, last: int, total: int) -> str:
    """The page's range text."""
    return f"Rows {first}\N{EN DASH}{last} of {total}"


def get(server: ServerProcess, fleet: Fleet, target: str) -> Page:
    response = raw_get(server.url, target, {"nodeplane_session": str(fleet.org.owner.token)})
    assert response.status < 500, (target, response.status, response.text[:300])
    return Page(response.status, response.text)


def query_of(url: str | None) -> dict[str, str]:
    assert url is not None and urlsplit(url).path == "/nodes", url
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_the_first_page_holds_100_rows_of_all(server: ServerProcess, fleet: Fleet) -> None:
    first = get(server, fleet, "/nodes")
    assert first.status == 200
    assert first.names == NAMES[:100]
    assert first.range == shown(1, 100, 120)
    assert first.link("prev") is None
    assert query_of(first.link("next")) == {"page": "2"}
    second = get(server, fleet, first.link("next") or "")
    assert second.names == NAMES[100:]
    assert second.range == shown(101, 120, 120)
    assert second.link("next") is None
    assert query_of(second.link("prev")) == {}


def test_pages_keep_the_filters_sort_and_size(server: ServerProcess, fleet: Fleet) -> None:
    """Next and Previous keep every filter, the sort and the page size; sorting, filtering and
    the page sizes' links keep them too but start again at page 1."""
    executor = str(fleet.executor.id)
    kept = {"q": "n-", "executor": executor, "sort": "chain", "dir": "desc", "per_page": "50"}
    target = "/nodes?q=n-&executor=" + executor + "&sort=chain&dir=desc&per_page=50"
    seen: list[str] = []
    page = get(server, fleet, target)
    for number, text in ((1, shown(1, 50, 120)), (2, shown(51, 100, 120))):
        assert page.range == text
        assert query_of(page.link("next")) == {**kept, "page": str(number + 1)}
        seen += page.names
        page = get(server, fleet, page.link("next") or "")
    assert page.range == shown(101, 120, 120) and page.link("next") is None
    seen += page.names
    assert seen == sorted(NAMES, reverse=True)
    assert query_of(page.link("prev")) == {**kept, "page": "2"}
    assert query_of(get(server, fleet, page.link("prev") or "").link("prev")) == kept
    # The form keeps the page size (and the sort) but not the page: new filters start at 1.
    assert '<input type="hidden" name="per_page" value="50">' in page.text
    assert 'name="page"' not in page.text
    links = [html.unescape(h) for h in re.findall(r'href="(/nodes\?[^"]*)"', page.text)]
    others = [u for u in links if u not in (page.link("prev"), page.link("next"))]
    assert others and all("page" not in query_of(u) for u in others), others
    sizes = {
        size: html.unescape(href)
        for href, size in re.findall(r'href="([^"]+)" aria-label="(\d+) rows per page"', page.text)
    }
    assert set(sizes) == {"100", "200", "500"}  # 50 is the page's own, not a link
    for size, url in sizes.items():
        expected = {k: v for k, v in kept.items() if k != "per_page"}
        if size != "100":  # the default is left out of the URL
            expected["per_page"] = size
        assert query_of(url) == expected, url
    # Sorting and removing a filter (the executor's chip) keep the search and the page size.
    for url in set(others) - set(sizes.values()):
        assert query_of(url)["q"] == "n-" and query_of(url)["per_page"] == "50", url


@pytest.mark.parametrize("size", ["50", "200", "500"])
def test_each_offered_page_size(server: ServerProcess, fleet: Fleet, size: str) -> None:
    page = get(server, fleet, f"/nodes?per_page={size}")
    assert page.status == 200
    assert page.names == NAMES[: int(size)]
    assert page.range == shown(1, min(int(size), NODES), 120)
    assert f'<strong aria-current="true">{size}</strong>' in page.text


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        ("per_page", "7", "rows per page: must be one of 50, 100, 200, 500"),
        ("per_page", "1000", "rows per page: must be one of 50, 100, 200, 500"),
        ("per_page", "-50", "rows per page: must be one of 50, 100, 200, 500"),
        ("per_page", "abc", "rows per page: must be one of 50, 100, 200, 500"),
        ("page", "0", "page: must be a whole number from 1"),
        ("page", "-1", "page: must be a whole number from 1"),
        ("page", "2x", "page: must be a whole number from 1"),
        ("page", "%D9%A3", "page: must be a whole number from 1"),  # an Arabic-Indic 3
    ],
)
def test_a_bad_page_size_or_number_is_a_400_with_the_form(
    server: ServerProcess, fleet: Fleet, param: str, value: str, message: str
) -> None:
    page = get(server, fleet, f"/nodes?q=n-&{param}={value}")
    assert page.status == 400
    assert page.error == message
    assert 'action="/nodes"' in page.text and 'value="n-"' in page.text
    assert page.names == []


@pytest.mark.parametrize("number", ["3", "4", "99", "9" * 40])
def test_a_page_past_the_last_is_the_last(server: ServerProcess, fleet: Fleet, number: str) -> None:
    page = get(server, fleet, f"/nodes?per_page=50&page={number}")
    assert page.status == 200
    assert page.names == NAMES[100:]
    assert page.range == shown(101, 120, 120)
    assert page.link("next") is None
    assert query_of(page.link("prev")) == {"per_page": "50", "page": "2"}


def test_the_total_counts_the_filtered_nodes(server: ServerProcess, fleet: Fleet) -> None:
    """The count honours the filters, the derived phase among them (read differently)."""
    page = get(server, fleet, "/nodes?q=n-01&per_page=50")
    assert page.names == NAMES[10:20] and page.range == shown(1, 10, 10)
    assert page.link("next") is None and page.link("prev") is None
    provisioning = get(server, fleet, "/nodes?phase=provisioning&per_page=50&page=3")
    assert provisioning.names == NAMES[100:] and provisioning.range == shown(101, 120, 120)
    assert query_of(provisioning.link("prev")) == {
        "phase": "provisioning",
        "per_page": "50",
        "page": "2",
    }
    running = get(server, fleet, "/nodes?phase=running&page=2")
    assert running.status == 200 and running.names == [] and running.range == "No rows"
    assert "No nodes match these filters." in running.text
    nothing = get(server, fleet, "/nodes?q=no-such-node")
    assert nothing.names == [] and nothing.range == "No rows"
    assert nothing.link("next") is None and nothing.link("prev") is None

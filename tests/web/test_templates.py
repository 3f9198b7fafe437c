"""Escaping that cannot be forgotten (finding 2): a guard over the UI's source. Every template is
autoescaped and none opts out; scripts come from /static, and the only inline script elements
hold JSON data through `|tojson`; no inline styles or handlers (the CSP refuses them); every form
that posts carries the CSRF token; app.js builds DOM from text, never from HTML strings."""

import re
from pathlib import Path

import pytest

from nodeplane.controlplane.web import templating
from nodeplane.controlplane.web.templating import templates

WEB = Path(templating.__file__).parent
TEMPLATES = sorted((WEB / "templates").glob("*.html"))
APP_JS = WEB / "static" / "app.js"

SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.S | re.I)
# One expression, filtered last by |tojson: `{{ <anything but {{ or }}>|tojson }}`.
JSON_DATA = re.compile(r"\{\{(?:(?!\{\{|\}\}).)*\|\s*tojson\s*\}\}", re.S)
FORM = re.compile(r"<form\b([^>]*)>(.*?)</form\s*>", re.S | re.I)
CSRF_FIELD = '<input type="hidden" name="csrf_token" value="{{ csrf_token }}">'


def test_there_are_templates() -> None:
    assert len(TEMPLATES) >= 10


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_every_template_is_autoescaped(path: Path) -> None:
    autoescape = templates.env.autoescape
    assert autoescape is True or (callable(autoescape) and autoescape(path.name))
    rendered = templates.env.from_string("{{ value }}").render(value="<b>&'\"")
    assert rendered == "&lt;b&gt;&amp;&#39;&#34;"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_no_template_opts_out_of_escaping(path: Path) -> None:
    source = path.read_text()
    for pattern in (r"\|\s*safe\b", r"\{%-?\s*autoescape\b", r"\bMarkup\b"):
        assert not re.search(pattern, source), f"{path.name}: {pattern}"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_scripts_are_files_or_json_data(path: Path) -> None:
    for attrs, body in SCRIPT.findall(path.read_text()):
        if 'src="/static/' in attrs:
            assert not body.strip(), f"{path.name}: a script with a src and a body"
        else:
            assert 'type="application/json"' in attrs, f"{path.name}: inline script {attrs}"
            assert JSON_DATA.fullmatch(body.strip()), f"{path.name}: JSON not via |tojson: {body}"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_no_inline_styles_handlers_or_script_urls(path: Path) -> None:
    source = path.read_text()
    assert not re.search(r"<style\b", source, re.I), path.name
    assert not re.search(r"\sstyle\s*=", source, re.I), path.name
    assert not re.search(r"\son[a-z]+\s*=", source, re.I), path.name
    assert "javascript:" not in source.lower(), path.name


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_every_posted_form_carries_the_csrf_token(path: Path) -> None:
    for attrs, body in FORM.findall(path.read_text()):
        if re.search(r'method="post"', attrs, re.I):
            assert CSRF_FIELD in body, f"{path.name}: a form posts without the CSRF token"


def test_app_js_builds_no_dom_from_html_strings() -> None:
    source = APP_JS.read_text()
    for sink in (
        r"\.innerHTML\b",
        r"\.outerHTML\b",
        r"insertAdjacentHTML",
        r"document\.write",
        r"\beval\s*\(",
        r"new\s+Function\b",
        r"setTimeout\(\s*[\"'`]",
        r"setInterval\(\s*[\"'`]",
        r"javascript:",
        r"setAttribute\(\s*[\"'`](style|on)",
        r"cssText",
        r"createContextualFragment",
    ):
        assert not re.search(sink, source), sink
    # The one HTML parse: the server's own page, through the page's only Trusted Types policy.
    assert source.count("parseFromString(") == 1
    assert "parseFromString(pageHtml.createHTML(" in source
    assert source.count("createPolicy(") == 1

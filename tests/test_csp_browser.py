"""The Content-Security-Policy in headless Chromium (Debian's): the search page, Swagger UI and ReDoc render
with their CSP and nothing is refused; no request leaves loopback. Against a real server with the fake
embedder (tests.fake_server)."""

import os

import pytest

from tests.servers import Server

pytestmark = [pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def server(fake_index, tmp_path_factory):
    srv = Server(fake_index, tmp_path_factory.mktemp("csp") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    outside: list[str] = []

    def block(route):
        outside.append(route.request.url)
        route.abort()

    ctx.route(lambda url: not url.startswith("http://127.0.0.1"), block)  # loopback only, and noted
    pg = ctx.new_page()
    pg.refused = []  # console messages about CSP violations
    pg.on("console", lambda m: pg.refused.append(m.text) if "Content Security Policy" in m.text else None)
    pg.outside = outside
    yield pg
    ctx.close()


def test_search_page_works_under_its_csp(page, server):
    page.goto(f"{server.base}/?q=Kata+Containers")
    page.locator("#results li.result").first.wait_for()
    assert page.locator("#results li.result").count() > 0
    assert page.refused == [] and page.outside == []


def test_swagger_ui_renders_from_local_assets(page, server):
    page.goto(f"{server.base}/docs")
    page.locator(".swagger-ui .opblock").first.wait_for()
    assert page.locator(".swagger-ui .opblock").count() >= 7
    assert page.refused == [] and page.outside == []


def test_redoc_renders_from_local_assets(page, server):
    page.goto(f"{server.base}/redoc")
    page.get_by_text("/v1/search").first.wait_for()
    # ReDoc's bundle links a "powered by" logo on its CDN: the CSP blocks it, which is the point; nothing
    # else is refused and no request leaves loopback
    assert all("https://cdn.redoc.ly/" in m and "img-src" in m for m in page.refused), page.refused
    assert page.outside == []

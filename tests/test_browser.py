"""The search page in headless Chromium (Debian's), driven by Playwright, against a real server on loopback.

Screenshots of every state go to test-output/screenshots/.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, xss_corpus, real_embedder):
    from indexer.build import build_index

    index = tmp_path_factory.mktemp("browser") / "index"
    build_index(xss_corpus, index, real_embedder)
    port = _free_port()
    env = {**os.environ, "REPORTQA_INDEX_DIR": str(index), "HOST": "127.0.0.1", "PORT": str(port)}
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the server exited; see its log")
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("the server did not become ready")
    yield base
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    # bypass_csp: Playwright polls string predicates (wait_for_function) with eval, which the page's CSP forbids;
    # the page under its CSP is tested in test_csp_browser.py
    ctx = browser.new_context(viewport={"width": 1100, "height": 900}, bypass_csp=True)
    ctx.route(lambda url: not url.startswith("http://127.0.0.1"), lambda route: route.abort())  # loopback only
    pg = ctx.new_page()
    yield pg
    ctx.close()


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_typing_shows_the_right_section_first_with_highlights(page, server):
    page.goto(server)
    assert page.evaluate("document.activeElement.id") == "q"  # focus on load
    shot(page, "01-empty")
    page.keyboard.type("What topics did OpenInfra Days China 2023 cover?", delay=15)
    first = page.locator("#results li.result").first
    first.wait_for()
    page.wait_for_function("document.querySelector('#status').textContent.includes('passage')")
    assert "OpenInfra Days China" in first.locator(".path").inner_text()
    assert first.locator("mark").count() > 0
    assert "LOKI" in first.locator(".passage-text").inner_text()
    link = first.locator("a.source")
    assert link.get_attribute("href").endswith("#openinfra-days-china")
    assert "lines" in first.locator(".lines").inner_text()
    assert "q=What+topics" in page.url or "q=What%20topics" in page.url  # the URL reflects the query
    shot(page, "02-results")


def test_keyboard_moves_through_results_and_enter_opens_the_source(page, server):
    page.goto(f"{server}/?q=Kata+Containers")
    page.locator("#results li.result").first.wait_for()
    page.locator("#q").focus()
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.classList.contains('result')")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.n") == "2"
    # the source opens in a new tab; answered here, so nothing leaves this machine
    page.context.route("https://openinfra.dev/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<title>source</title>"))
    with page.context.expect_page() as popup:
        page.keyboard.press("Enter")
    assert "openinfra.dev/annual-report/2023#" in popup.value.url
    popup.value.close()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.activeElement.id") == "q"


def test_back_button_restores_the_previous_query(page, server):
    page.goto(server)
    page.fill("#q", "Kata Containers")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelector('#status').textContent.includes('passage')")
    page.fill("#q", "WeChat official accounts")
    page.press("#q", "Enter")
    page.wait_for_function("location.search.includes('WeChat')")
    page.go_back()  # possibly before the WeChat answer arrived: it must not paint over Kata's
    page.wait_for_function("document.querySelector('#q').value === 'Kata Containers'")
    page.wait_for_function("document.querySelector('#results .path')?.textContent.includes('Kata')")
    page.wait_for_timeout(600)
    assert "Kata" in page.locator("#results .path").first.inner_text()


def test_ask_mode_shows_an_answer_with_a_citation(page, server):
    page.goto(server)
    page.check('input[name="mode"][value="ask"]')
    page.fill("#q", "Who is the chair of the OpenInfra Foundation Board of Directors?")
    page.press("#q", "Enter")
    page.locator("#answer:not([hidden])").wait_for()
    assert "Julia Kreger" in page.locator("#answer-text").inner_text()
    cite = page.locator("button.cite").first
    n = cite.get_attribute("data-cite")
    cite.click()
    assert page.evaluate("document.activeElement.dataset.n") == n
    assert "mode=ask" in page.url
    shot(page, "03-ask-answer")


def test_unanswerable_question_shows_the_abstention_message(page, server):
    page.goto(f"{server}/?mode=ask&q=How+do+I+bake+sourdough+bread%3F")
    page.locator("#answer:not([hidden])").wait_for()
    assert "does not say" in page.locator("#answer-text").inner_text()
    assert "Not in the report" in page.locator("#answer-meta").inner_text()
    assert page.locator("button.cite").count() == 0
    shot(page, "04-ask-abstained")


def test_markup_in_a_document_is_shown_as_text_never_run(page, server):
    page.goto(server)
    page.fill("#q", "zebra quokka probe")
    page.press("#q", "Enter")
    first = page.locator("#results li.result").first
    first.wait_for()
    text = first.locator(".passage-text").inner_text()
    assert "<script>window.__xss = 1</script>" in text
    assert '<img src=x onerror="window.__xss = 2">' in text
    assert page.evaluate("window.__xss") is None
    assert page.locator("#results script, #results img").count() == 0
    shot(page, "05-markup-inert")


def test_loading_state(page, server):
    page.goto(server)
    held = []
    page.route("**/v1/search**", lambda route: held.append(route))  # answered only after the screenshot
    page.fill("#q", "Kata Containers")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelector('#status').textContent.includes('Searching')")
    assert page.locator("#results").get_attribute("aria-busy") == "true"
    shot(page, "06-loading")
    for route in held:
        try:
            route.continue_()
        except Exception:  # a request the page itself aborted (superseded) cannot be continued
            pass
    page.unroute("**/v1/search**")
    page.wait_for_function("document.querySelector('#status').textContent.includes('passage')")
    assert page.locator("#results").get_attribute("aria-busy") == "false"


def test_empty_result_state(page, server):
    page.goto(server)
    page.check('input[name="mode"][value="search"]')
    page.route("**/v1/search**", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body='{"query":"x","mode":"hybrid","took_ms":1,"index_version":"v","results":[]}'))
    page.fill("#q", "xylophone")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelector('#status').textContent.includes('No passages')")
    shot(page, "06b-empty-result")


def test_the_api_going_away_shows_the_error_state(page, server):
    page.goto(f"{server}/?q=Kata+Containers")
    page.locator("#results li.result").first.wait_for()
    page.route("**/v1/**", lambda route: route.abort("connectionrefused"))
    page.fill("#q", "OpenInfra Europe advisory board")
    page.press("#q", "Enter")
    err = page.locator("#error:not([hidden])")
    err.wait_for()
    assert "cannot be reached" in err.inner_text()
    assert page.locator("#results li").count() == 0
    shot(page, "07-error-unreachable")
    page.unroute("**/v1/**")
    page.route("**/v1/**", lambda route: route.fulfill(status=503, content_type="application/json",
                                                     body='{"detail":"the index is still loading"}'))
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelector('#error').textContent.includes('unavailable')")


def test_phone_width(browser, server):
    ctx = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = ctx.new_page()
    page.goto(f"{server}/?q=OpenInfra+Asia+advisory+board")
    page.locator("#results li.result").first.wait_for()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(SHOTS / "08-phone.png"))  # what fits on the phone screen
    ctx.close()


def test_labels_and_roles(page, server):
    page.goto(server)
    assert page.get_by_role("search").count() == 1
    assert page.get_by_label("Search the report").count() == 1
    assert page.get_by_role("status").count() == 1
    assert page.locator("#error").get_attribute("role") == "alert"
    assert page.get_by_role("radio", name="Ask for an answer").count() == 1


def test_document_filter_limits_results_to_one_document(page, server):
    # the browser index holds two documents (the report and the markup probe): the page offers a filter
    page.goto(server)
    page.locator("#doc-filter:not([hidden])").wait_for()
    options = page.locator("#doc option").all_inner_texts()
    assert options[0] == "All documents" and len(options) == 3
    assert any("Markup probe" in o for o in options) and any("2023 Annual Report" in o for o in options)
    page.fill("#q", "zebra quokka probe OpenInfra Foundation board")
    page.press("#q", "Enter")
    page.wait_for_function("document.querySelectorAll('#results .doc').length > 1")
    assert set(page.locator("#results .doc").all_inner_texts()) == {"Markup probe", "2023 Annual Report"}
    shot(page, "09-documents-all")
    page.select_option("#doc", "xss-probe")
    page.wait_for_function("location.search.includes('doc=xss-probe')")
    page.wait_for_function("document.querySelector('#status').textContent.includes('passage')")
    page.wait_for_function(
        "[...document.querySelectorAll('#results .doc')].every(e => e.textContent === 'Markup probe')")
    assert page.locator("#results li.result").count() >= 1
    shot(page, "10-documents-filtered")
    # the filter comes back from the URL, and searches send it
    page.goto(f"{server}/?q=zebra+quokka&doc=openinfra-annual-report-2023")
    page.wait_for_function("document.querySelector('#doc').value === 'openinfra-annual-report-2023'")
    page.wait_for_function("document.querySelector('#status').textContent.match(/passage|No passages/)")
    assert "Markup probe" not in page.locator("#results").inner_text()
    # /v1/ask searches every document: no filter in Ask mode
    page.check('input[name="mode"][value="ask"]')
    assert page.locator("#doc-filter").is_hidden()


def test_an_index_of_one_document_shows_no_document_filter(page, server):
    one = ('{"documents": [{"doc_id": "openinfra-annual-report-2023", "title": "2023 Annual Report"}],'
           ' "total": 1, "offset": 0, "limit": 1000, "next_offset": null}')
    page.route("**/v1/index**", lambda route: route.fulfill(status=200, content_type="application/json", body=one))
    page.goto(f"{server}/?q=Kata+Containers")
    page.locator("#results li.result").first.wait_for()
    page.wait_for_timeout(500)
    assert page.locator("#doc-filter").is_hidden()
    assert page.locator("#results .doc").count() == 0

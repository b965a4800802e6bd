"""The web console in a real browser: the chat playground and the operator pages.

Each test starts repotalk embedded (sample_repo indexed, the sandbox channel for replies), opens
the pages in Debian's Chromium and acts as a person would: typing, clicking, signing in.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from libs.common import db
from libs.common.models.code_index import Repository
from services.code_search.progress import ProgressRecorder
from tests.browser.conftest import Server, screenshot
from tests.conftest import apply_env
from tests.e2e.support import SAMPLE_REPO, embedded_server
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.browser

QUESTION = "where is the webhook signature verified?"
ALICE = "+15550001111"
BOB = "+447700900123"


def _ask(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def _sign_in(page: Page, server: Server, key: str) -> None:
    page.goto(f"{server.url}/console/repos")
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/repos$"))
    page.get_by_label("Admin API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def _record_run(name: str, done: int, total: int) -> None:
    with db.session_scope() as session:
        repo = session.get(Repository, name)
        assert repo is not None
        repo.status = "indexing"
    recorder = ProgressRecorder(name)
    recorder.phase("starting", restart=True)
    recorder(done, total)


def _finish_run(name: str) -> None:
    with db.session_scope() as session:
        repo = session.get(Repository, name)
        assert repo is not None
        repo.status = "ready"
    ProgressRecorder(name).phase("done")


def test_a_question_in_the_playground_gets_a_cited_answer(server: Server, page: Page) -> None:
    page.goto(f"{server.url}/console/chat?as={ALICE}")
    expect(page.get_by_label("Act as")).to_have_value(ALICE)
    _ask(page, QUESTION)

    mine = page.locator("#messages .from-me").filter(has_text=QUESTION)
    expect(mine).to_have_count(1)
    answer = page.locator("#messages .from-bot").first
    expect(answer).to_contain_text("webhooks/security.py:")
    expect(answer).to_contain_text("verify_twilio_signature")
    # WhatsApp formatting rendered, not shown as markers: *bold* and ```code```.
    expect(answer.locator("strong").first).to_be_visible()
    expect(answer.locator("pre code")).to_contain_text("def verify_twilio_signature")
    assert "*verify_twilio_signature*" not in answer.inner_text()
    # Ticks: the question is answered (blue ticks), the reply was read through a status callback.
    expect(mine.get_by_role("img", name="Read")).to_be_visible()
    expect(answer).to_have_attribute("data-status", "read")
    expect(page.locator("#typing")).to_have_text("")
    expect(page.get_by_role("log", name="Conversation")).to_have_attribute("aria-live", "polite")
    screenshot(page, "chat-answer")


def test_the_typing_indicator_shows_while_the_model_answers(
    base_env: dict[str, str], page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAI() as llm:
        # Slow enough for the page to be seen waiting: the indicator is up for the whole model call.
        llm.reply("Checked in `sample_repo/webhooks/security.py:22` by *verify_twilio_signature*.", delay=4)
        apply_env(monkeypatch, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=llm.base_url)
        with embedded_server() as url:
            page.goto(f"{url}/console/chat?as={ALICE}")
            _ask(page, QUESTION)
            typing = page.get_by_role("status").filter(has_text="repotalk is typing")
            expect(typing).to_be_visible()
            screenshot(page, "chat-typing")
            answer = page.locator("#messages .from-bot").first
            expect(answer.locator("code")).to_have_text("sample_repo/webhooks/security.py:22")
            expect(answer.locator("strong")).to_have_text("verify_twilio_signature")
            expect(page.locator("#typing")).to_have_text("")
            assert len(llm.requests) == 1


def test_switching_user_shows_a_separate_session(server: Server, browser_phone: Page) -> None:
    page = browser_phone
    page.goto(f"{server.url}/console/chat?as={ALICE}")
    _ask(page, QUESTION)
    expect(page.locator("#messages .from-bot").first).to_contain_text("webhooks/security.py:")

    page.get_by_label("Act as").select_option(BOB)
    expect(page).to_have_url(re.compile(r"as=%2B447700900123"))
    expect(page.locator("#messages").get_by_text(QUESTION)).to_have_count(0)
    _ask(page, "/repos")
    expect(page.locator("#messages .from-bot").first).to_contain_text("sample_repo")
    expect(page.locator("#messages .bubble")).to_have_count(2)
    screenshot(page, "chat-second-user-375px")

    # Back to the first number: its own conversation, untouched by the second one.
    page.get_by_label("Another number").fill(ALICE)
    page.get_by_role("button", name="Use").click()
    expect(page.locator("#messages .from-me").filter(has_text=QUESTION)).to_have_count(1)
    expect(page.locator("#messages .from-me").filter(has_text="/repos")).to_have_count(0)
    # The page fits a phone: nothing wider than the 375 px viewport.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_an_operator_adds_a_repository_and_watches_it_index(server: Server, page: Page, tmp_path: Path) -> None:
    source = tmp_path / "another_repo"
    shutil.copytree(SAMPLE_REPO, source)
    _sign_in(page, server, server.admin_key)
    expect(page).to_have_url(f"{server.url}/console/repos")
    expect(page.locator('#repos-body tr[data-repo="sample_repo"]')).to_be_visible()

    page.get_by_label("Path on the server or git URL").fill(str(source))
    page.get_by_label("Name (optional)").fill("another_repo")
    page.get_by_role("button", name="Add and index").click()
    row = page.locator('#repos-body tr[data-repo="another_repo"]')
    expect(row).to_have_attribute("data-status", "ready")
    expect(page.get_by_role("status").filter(has_text="another_repo is indexed")).to_be_visible()
    files = int(row.locator("td.num").first.inner_text())
    assert files > 10
    expect(page.locator("#jobs")).to_contain_text("Add another_repo — done")
    screenshot(page, "repositories")

    # A path that is not there is refused with the admin API's reason.
    page.get_by_label("Path on the server or git URL").fill(str(tmp_path / "missing"))
    page.get_by_role("button", name="Add and index").click()
    expect(page.get_by_role("alert")).to_contain_text("not a directory")

    # A run in progress, as code_search records it (in distributed mode another process does):
    # the page follows it live, without a reload.
    _record_run("another_repo", done=5, total=20)
    progress = page.get_by_role("progressbar", name="Indexing another_repo")
    expect(progress).to_have_attribute("value", "5")
    expect(row).to_contain_text("5 of 20 files")
    screenshot(page, "repositories-indexing")
    expect(row.get_by_role("button", name="Re-index another_repo")).to_be_disabled()
    _finish_run("another_repo")
    expect(row).to_have_attribute("data-status", "ready")
    expect(progress).to_have_count(0)

    # Re-index: the run goes through indexing again and ends ready.
    row.get_by_role("button", name="Re-index another_repo").click()
    expect(page.locator("#jobs li").first).to_contain_text("Re-index another_repo — done")
    expect(row).to_have_attribute("data-status", "ready")


def test_turns_and_usage_pages_show_a_turn_without_its_body(server: Server, page: Page) -> None:
    page.goto(f"{server.url}/console/chat?as={ALICE}")
    _ask(page, QUESTION)
    expect(page.locator("#messages .from-bot").first).to_contain_text("webhooks/security.py:")

    _sign_in(page, server, server.admin_key)
    page.goto(f"{server.url}/console/turns")
    table = page.locator("#turns-table tbody")
    expect(table.locator("tr").first).to_contain_text("answered")
    expect(table).not_to_contain_text(QUESTION)
    screenshot(page, "turns")
    page.get_by_label("Show message bodies").check()
    page.get_by_role("button", name="Apply").click()
    expect(table).to_contain_text(QUESTION)

    page.goto(f"{server.url}/console/usage")
    expect(page.locator("#kpi-turns")).not_to_have_text("0")
    expect(page.get_by_role("img", name="Messages per hour")).to_be_visible()
    expect(page.get_by_role("img", name="Searches by ranker")).to_be_visible()
    screenshot(page, "usage")

    # Operator pages at phone width: wide tables scroll inside their panel, the page itself does not.
    page.set_viewport_size({"width": 375, "height": 740})
    for name in ("usage", "turns", "repos"):
        page.goto(f"{server.url}/console/{name}")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, name
        screenshot(page, f"{name}-375px")


def test_a_wrong_api_key_is_refused(server: Server, page: Page) -> None:
    _sign_in(page, server, "rtk_0123456789ab_" + "x" * 43)
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    expect(page).to_have_url(f"{server.url}/console/login")
    screenshot(page, "login-refused")
    # Still locked out: the operator pages send the browser back to the sign-in form.
    page.goto(f"{server.url}/console/usage")
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/usage$"))
    status = page.evaluate(
        "fetch('/console/repos', {method: 'POST', headers: {'Content-Type': 'application/json', "
        "'X-API-Key': 'rtk_0123456789ab_" + "y" * 43 + "'}, body: JSON.stringify({source: '/tmp'})})"
        ".then(r => r.status)"
    )
    assert status == 403

"""The chat in a real browser: Debian's Chromium driven by Playwright against `python app.py`.

Runs in CI (.ci/run installs chromium and the test extras); skipped locally when either is missing,
unless QA_REQUIRE_BROWSER=1 makes that a failure. Saves docs/screenshot-answer.png.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import CORPUS, ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = ROOT / "docs" / "screenshot-answer.png"
SCRIPT_ARTICLE = """title: <script>alert("title")</script> Flood <b>warning</b>
source: The [Daily](http://evil.example) Post
published: 2021-03-02

<script>document.title = "HACKED"</script> The river Oder flooded the town of Frankfurt on Tuesday, forcing 300 \
residents to leave. See [the map](http://evil.example/map) and <img src=x onerror="document.title='HACKED'">.
"""

pytestmark = pytest.mark.slow


def _missing() -> str:
    if not Path(CHROMIUM).exists():
        return "chromium is not installed (apt-get install chromium; .ci/run does it in CI)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return ""


if _missing():
    if os.environ.get("QA_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"QA_REQUIRE_BROWSER=1 but {_missing()}")
    pytest.skip(_missing(), allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """`python app.py` keyword-only on a copy of the corpus, a fresh index and a free port."""
    work = tmp_path_factory.mktemp("app")
    corpus, index = work / "corpus", work / "index"
    shutil.copytree(CORPUS, corpus)
    port = free_port()
    log = open(work / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--corpus", str(corpus), "--index", str(index),
                             "--model", "none", "--port", str(port)], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{(work / 'app.log').read_text()}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"app.py did not answer on {url} in 120 s:\n{(work / 'app.log').read_text()}")
        yield url, work
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        pg = context.new_page()
        pg.dialogs, pg.timings = [], []
        pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
        pg.goto(app[0])
        pg.wait_for_selector("#question textarea", timeout=60_000)
        yield pg
        browser.close()


def answers(page) -> int:
    return page.locator("#answers [data-testid=bot]").count()


def wait_answer(page, before: int) -> str:
    """The text of the next answer once it is complete (the Markdown export follows the last piece)."""
    page.wait_for_function(
        """(n) => { const b = document.querySelectorAll('#answers [data-testid=bot]');
                    return b.length > n && !b[b.length - 1].innerText.includes('Searching'); }""",
        arg=before, timeout=30_000)
    page.wait_for_function(f"document.querySelector('#sources #turn-{before + 1}') !== null", timeout=30_000)
    return page.locator("#answers [data-testid=bot]").last.inner_text()


def ask(page, question: str) -> str:
    """Type question, press Enter, return the answer; page.timings gets (question, first text s, full s)."""
    before = answers(page)
    box = page.locator("#question textarea")
    box.fill(question)
    t0 = time.perf_counter()
    box.press("Enter")
    page.wait_for_function("(n) => document.querySelectorAll('#answers [data-testid=bot]').length > n",
                           arg=before, polling="raf")
    first = time.perf_counter() - t0
    text = wait_answer(page, before)
    page.timings.append((question, first, time.perf_counter() - t0))
    return text


def upload(page, files, name: str) -> str:
    """Upload files and return the report once it names `name` (a new report, not the last one)."""
    if not page.locator("#upload").is_visible():
        page.get_by_text("Add articles", exact=True).click()
        page.wait_for_selector("#upload-status", state="attached")
    page.locator("#upload-status").evaluate("e => e.dataset.seen = e.innerText")
    page.locator("#upload input[type=file], input[type=file]").first.set_input_files(files)
    page.wait_for_function(
        "(name) => { const e = document.querySelector('#upload-status'), t = e.innerText; "
        "return t !== e.dataset.seen && (t.includes('Added ' + name) || t.includes('Rejected ' + name)) "
        "&& !/^\\s*[0-9.]+s/.test(t); }",
        arg=name, timeout=60_000)
    return page.locator("#upload-status").inner_text()


def test_chat_in_the_browser(app, page):
    url, work = app
    header = page.locator("#archive-header").inner_text()
    assert "2 articles" in header and "keywords only" in header and "answers: rules" in header

    # An example question, clicked: an answer that streams in, with [n] markers and source cards.
    example = "How many civilians were killed near the hospital?"
    t0 = time.perf_counter()
    page.get_by_text(example, exact=True).click()
    page.wait_for_function("document.querySelectorAll('#answers [data-testid=bot]').length > 0", polling="raf")
    first_text = time.perf_counter() - t0
    text = wait_answer(page, 0)
    full = time.perf_counter() - t0
    assert "11 civilians" in text and "Reported by 2 of 2 articles" in text
    assert "“Ariha”" in text and "“Jericho”" in text
    assert page.locator("#answers a.cite").count() >= 4
    for n in (1, 2):
        card = page.locator(f"#sources #src-1-{n}")
        assert card.is_visible()
        assert "11 civilians" in card.locator("p.context mark").inner_text()
    assert "2020-05-11" in page.locator("#sources #src-1-1 .meta").inner_text()
    assert "Jericho" in page.locator("#sources #src-1-2 b.differs").inner_text()
    page.locator("#answers a.cite", has_text="[2]").first.click()
    page.wait_for_timeout(800)
    assert page.locator("#sources #src-1-2").evaluate(
        "e => { const r = e.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; }")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    page.timings.append((f"{example} (example clicked)", first_text, full))

    # Copy as Markdown puts the answer with its numbered sources on the clipboard.
    page.locator("#copy-md").click()
    page.wait_for_timeout(300)
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith(f"**Q:** {example}") and "\n[2] " in copied

    # A follow-up uses the conversation.
    ask(page, "Which school was hit with cluster munitions?")
    text = ask(page, "When did that happen?")
    assert "February 25" in text and "school" in text and "Read with your earlier question" in text

    # The articles don't say: labelled, with the nearest passages.
    text = ask(page, "What is the capital of France?")
    assert "The articles don't say" in text
    text = ask(page, "Why did Amnesty call for sanctions against the United Nations?")
    assert "The articles don't say" in text and "Nearest passages found — not an answer" in text
    assert "not an answer" in page.locator("#sources section.turn").first.inner_text()

    # Long cards scroll inside the sources panel: they do not run on over "Add articles" below it.
    for summary in page.locator("#sources .card > details > summary").all()[:3]:
        summary.click()  # "Whole article"
    panel, below = page.locator("#sources"), page.get_by_text("Add articles", exact=True)
    assert panel.evaluate("e => e.scrollHeight > e.clientHeight")  # more than the panel shows
    assert panel.evaluate("e => getComputedStyle(e).overflowY") in ("auto", "scroll")  # Gradio's inline style lost
    assert panel.bounding_box()["y"] + panel.bounding_box()["height"] <= below.bounding_box()["y"]

    # Uploads: a bad file is rejected and nothing is lost; a good one answers at once.
    (work / "bad.txt").write_bytes(b"\x00\x01binary")
    status = upload(page, [str(work / "bad.txt")], "bad.txt")
    assert "Rejected bad.txt" in status and "binary" in status
    assert "2 articles" in page.locator("#archive-header").inner_text()
    status = upload(page, [{"name": "../../flood.txt", "mimeType": "text/plain",
                            "buffer": SCRIPT_ARTICLE.encode()}], "flood.txt")
    assert "Added" in status and "1 article" in status
    assert (work / "corpus" / "flood.txt").exists() and not (work.parent / "flood.txt").exists()
    assert "3 articles" in page.locator("#archive-header").inner_text()
    text = ask(page, "Which town did the river Oder flood?")
    assert "Frankfurt" in text and "<script>" in text  # the markup is shown as text

    # The <script> article renders as text: no script ran, no element or link came from it.
    card = page.locator("#sources section.turn").first
    assert '<script>alert("title")</script>' in card.locator(".title").inner_text()
    assert "[Daily](http://evil.example)" in card.locator(".meta").inner_text()
    for where in ("#answers", "#sources"):
        assert page.locator(f"{where} script, {where} img[src=x], {where} a[href^='http://evil']").count() == 0
    assert page.title() != "HACKED" and page.dialogs == []

    # No server paths anywhere in the page.
    html = page.content()
    assert str(work) not in html and str(ROOT) not in html

    print("\ntime to first visible text / to the full answer with its source cards:")
    for question, first, done in page.timings:
        print(f"  {first * 1000:5.0f} ms / {done * 1000:5.0f} ms  {question}")

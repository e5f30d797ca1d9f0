"""The SysBank web page: its JSON API, then the page itself driven in a real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from sysbank.server import LISTEN_BACKLOG, listen

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`browse.py serve --port 0` on 127.0.0.1; the URL is read from its first output line."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "sysbank" / "browse.py"), "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, f"no URL in {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        yield match.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def get(url: str, timeout: float = 10) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def search_url(server: str, **params: str) -> str:
    return server + "api/search?" + urllib.parse.urlencode(params)


def test_json_api(server: str) -> None:
    status, meta = get(server + "api/meta")
    assert status == 200 and meta["sources"] == ["frgpts", "gptstore"] and "behaviour" in meta["categories"]
    status, found = get(server + "api/search?q=%E6%98%9F%E5%BA%A7")  # 星座
    assert status == 200 and [item["id"] for item in found["items"]] == ["frgpts_163"]
    status, filtered = get(server + "api/search?language=en&min=6&source=frgpts")
    assert filtered["total"] >= 1 and all(i["language"] == "en" and i["n_constraints"] >= 6 for i in filtered["items"])
    status, profile = get(server + "api/profile?id=frgpts_163")
    assert status == 200 and len(profile["constraints"]) == len(profile["constraint_categories"]) == 8
    assert get(server + "api/search?q=(&regex=1")[0] == 400
    assert get(server + "api/search?min=abc")[0] == 400
    assert get(server + "api/profile?id=nope")[0] == 404
    assert get(server + "api/nothing")[0] == 404


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "(", "regex": "1"}, "invalid regular expression '(' (missing ) at position 1)"),
        ({"q": "(" * 2000 + ")" * 2000, "regex": "1"},
         "regular expression '" + "(" * 60 + "'… (4000 characters) is nested too deeply"),
        ({"q": "x", "regex": "yes"}, "parameter regex: expected 1 or 0, got 'yes'"),
        ({"limit": "0"}, "parameter limit: expected a whole number from 1 to 200, got '0'"),
        ({"limit": "201"}, "parameter limit: expected a whole number from 1 to 200, got '201'"),
        ({"offset": "-1"}, "parameter offset: expected a whole number >= 0, got '-1'"),
        ({"min": "abc"}, "parameter min: expected a whole number >= 0, got 'abc'"),
        ({"min": "5", "max": "2"}, "max constraints: 2 is below the minimum 5, so nothing could match"),
        ({"language": "fr"}, "language: expected one of en, zh, got 'fr'"),
    ],
    ids=["invalid", "nested", "flag", "limit-0", "limit-201", "offset", "min", "empty-range", "language"],
)
def test_bad_requests_answer_400_with_one_line(server: str, params: dict[str, str], message: str) -> None:
    assert get(search_url(server, **params)) == (400, {"error": message})


def test_slow_searches_are_stopped_and_stall_nothing(server: str) -> None:
    """`(\\w|\\w)*#` backtracks for tens of seconds: each ends in a 400 at its deadline (2 s). Two of them
    at once (as many as a two-core machine has search slots) queue in their own lane: plain searches,
    ordinary patterns and other requests sent meanwhile are all answered before the first one ends."""
    finished: list[str] = []
    slow_answers: list[tuple[int, dict]] = []

    def slow() -> None:
        slow_answers.append(get(search_url(server, q=r"(\w|\w)*#", regex="1"), timeout=30))
        finished.append("slow")

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # let them start searching
    for url in (server + "api/meta", search_url(server, q="emoji"), search_url(server, q=r"\d+字", regex="1"),
                search_url(server, q="not exceed (80|120) words", regex="1"), server + "api/profile?id=frgpts_163"):
        assert get(url)[0] == 200
        finished.append(url)
    for thread in threads:
        thread.join(timeout=30)
    assert finished[-2:] == ["slow", "slow"] and len(finished) == 7
    message = (r"search for '(\w|\w)*#' stopped after 2 s: it has alternatives inside a repeat, which can "
               "backtrack without end; simplify the pattern")
    assert slow_answers == [(400, {"error": message})] * 2


def test_200_concurrent_clients_are_all_answered(server: str) -> None:
    """200 clients, each on its own connection, all at once (the old backlog of 5 dropped most of them)."""
    urls = [server + "api/meta", search_url(server, q="emoji"), search_url(server, q=r"\d+字", regex="1"),
            search_url(server, language="zh", min="6"), server + "api/profile?id=gptstore_514"]
    expected = [get(url) for url in urls]

    async def clients() -> list[tuple[int, dict]]:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
            async def one(url: str) -> tuple[int, dict]:
                async with session.get(url) as res:
                    return res.status, await res.json()

            return await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(200)))

    answers = asyncio.run(clients())
    assert answers == [expected[i % len(urls)] for i in range(200)]


def test_listen_queues_hundreds_of_waiting_connections() -> None:
    """While no connection is being accepted, the kernel still completes 300 handshakes."""
    assert LISTEN_BACKLOG >= 300
    server_sock = listen("127.0.0.1", 0)
    clients = []
    try:
        address = server_sock.getsockname()
        for _ in range(300):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(address)
            clients.append(client)
        deadline = time.monotonic() + 10  # a handshake left out of a full queue does not complete at all
        while not all(map(_connected, clients)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(map(_connected, clients))
    finally:
        for client in clients:
            client.close()
        server_sock.close()


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
        return True
    except OSError:
        return False


def test_page_stats(server: str) -> None:
    status, stats = get(server + "api/stats")
    assert status == 200 and stats["records"] == get(server + "api/meta")[1]["total"]


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[Page]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        external: list[str] = []
        context.on("request", lambda req: None if req.url.startswith(server) else external.append(req.url))
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda err: errors.append(str(err)))
        pg.goto(server)
        yield pg
        assert errors == [], errors
        assert external == [], f"page fetched outside resources: {external}"
        browser.close()


def rows(page: Page) -> list[str]:
    return page.locator("#result-list li").evaluate_all("els => els.map(e => e.dataset.id)")


def api_ids(server: str, query: str) -> list[str]:
    return [item["id"] for item in get(server + "api/search?limit=200&" + query)[1]["items"]]


def test_browse_search_filter_open_in_chromium(page: Page, server: str, tmp_path: Path) -> None:
    expect(page.locator("#status")).to_have_text(re.compile(r"^30 prompts"))
    assert len(rows(page)) == 30

    page.fill("#q", "emoji")
    expect(page.locator("#status")).to_have_text(re.compile(r"^\d+ prompts? *$"))
    expected = api_ids(server, "q=emoji")
    expect(page.locator("#result-list li")).to_have_count(len(expected))
    assert rows(page) == expected and 0 < len(expected) < 30

    page.fill("#q", "表情")
    page.select_option("#language", "zh")
    expected = api_ids(server, "q=%E8%A1%A8%E6%83%85&language=zh")
    expect(page.locator("#result-list li")).to_have_count(len(expected))
    assert rows(page) == expected and "frgpts_163" in expected

    page.fill("#q", "")
    page.select_option("#category", "logic")
    page.fill("#min", "6")
    expected = api_ids(server, "language=zh&category=logic&min=6")
    expect(page.locator("#result-list li")).to_have_count(len(expected))
    assert rows(page) == expected and 0 < len(expected) < 14

    page.select_option("#category", "")
    page.fill("#min", "")
    page.fill("#q", "星座")
    expect(page.locator("#result-list li")).to_have_count(1)

    page.click("#result-list li >> nth=0")
    expect(page.locator("#detail-name")).to_have_text("星座专家")
    constraints = page.locator("#constraint-list li.constraint")
    expect(constraints).to_have_count(8)
    tags = constraints.evaluate_all("els => els.map(e => e.dataset.categories)")
    assert all(tags) and any("format" in t for t in tags)
    # every constraint is highlighted: a tagged, coloured span in the list and a <mark> in the prompt text
    colours = constraints.locator(".text").evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert all(c not in ("rgba(0, 0, 0, 0)", "transparent") for c in colours)
    expect(page.locator("pre.prompt mark.constraint-mark")).to_have_count(8)
    assert page.locator("#detail mark.hit").count() >= 1  # the search term is marked too

    # an English prompt for the screenshot (CJK glyphs depend on the fonts the machine has)
    page.select_option("#language", "")
    page.fill("#q", "budget")
    expect(page.locator("#result-list li")).to_have_count(len(api_ids(server, "q=budget")))
    page.click("#result-list li[data-id=gptstore_514]")
    expect(page.locator("#detail-name")).to_have_text("Budget Buddy")
    expect(page.locator("pre.prompt mark.constraint-mark")).to_have_count(6)
    expect(page.locator("#result-list li.selected")).to_have_count(1)
    shot = tmp_path / "sysbank.png"
    page.screenshot(path=str(shot), full_page=False)
    assert_not_blank(shot)

    page.check("#regex")
    page.fill("#q", "(")
    expect(page.locator("#status")).to_have_class(re.compile("error"))
    expect(page.locator("#status")).to_have_text("Search not run: invalid regular expression '(' (missing ) at "
                                                 "position 1)")

    page.fill("#q", r"(\w|\w)*#")  # searches for 2 s: a spinner meanwhile, then the time-out in the page's words
    expect(page.locator("#status")).to_have_class("busy")
    expect(page.locator("#status")).to_have_text("Searching…")
    spinner = page.locator("#status").evaluate("e => getComputedStyle(e, '::before').animationName")
    assert spinner == "spin"
    expect(page.locator("#status")).to_have_class("error", timeout=10_000)
    expect(page.locator("#status")).to_contain_text("Search not run: search for '(\\w|\\w)*#' stopped after 2 s")


def test_deep_link_opens_record(page: Page, server: str) -> None:
    page.goto(server + "#id=gptstore_549")
    expect(page.locator("#detail-name")).to_have_text("Polite Customer Desk")
    expect(page.locator("#constraint-list li")).to_have_count(5)


def assert_not_blank(png: Path) -> None:
    """A real rendering has many distinct colours; a blank or failed page has one or two."""
    from PIL import Image

    with Image.open(png) as img:
        assert img.size == (1280, 900)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, f"screenshot looks blank ({len(colours or [])} colours)"

"""The live view in a real browser: headless Chromium (Debian's ``chromium`` package) driven by
Playwright follows a simulated campaign run by ``dklscope run``, pauses, resumes and stops it,
then opens the finished campaign read-only.

Skipped where no Chromium is installed, except in CI (``CI=true``), where it must run:
``.ci/run`` installs the package. Screenshots are written to the test's temporary folder and,
when ``DKLSCOPE_TEST_ARTEFACTS`` names a folder, copied there; both paths are printed.
"""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest

from dklscope.campaign.control import OPERATOR_STOP
from dklscope.campaign.journal import Journal

from .test_live import model_detail
from .test_runner import REALTIME, start_run

CHROMIUM_ARGS = [  # headless, and no attempt to reach Google's services on a closed network
    "--no-sandbox",  # as root
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

CONFIG = REALTIME.replace("dwell_s: 0.02", "dwell_s: 0.3").replace("steps: 15", "steps: 45") + (
    "runner: {publish: 'tcp://127.0.0.1:0', control: 'tcp://127.0.0.1:0'}\n"
)
N_PLANNED = 50


def chromium_path() -> str | None:
    for candidate in (os.environ.get("DKLSCOPE_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        message = "no Chromium: apt-get install chromium (.ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must run the browser test")
        pytest.skip(message)
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as playwright:  # launch() gives Chromium a fresh profile folder
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def view(*args: str):
    """``dklscope view ARGS --port P`` in a subprocess; yields its URL once it answers."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dklscope", "view", *args, "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "the view did not start"
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)  # stops as Ctrl-C does
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        output = process.stdout.read().decode()
        assert code == 0, output
        assert "Traceback" not in output, output


def open_page(browser, url: str):
    """A page on ``url``, with every request's host recorded."""
    page = browser.new_page(viewport={"width": 1600, "height": 1050})
    hosts = set()
    page.on("request", lambda request: hosts.add(urlparse(request.url).netloc))
    page.goto(url)
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=60_000)
    return page, hosts


def model(page, name: str, expression: str):
    find = f"const m = Bokeh.documents[0].get_model_by_name({name!r})"
    return page.evaluate(f"() => {{ {find}; return {expression}; }}")


def points(page) -> int:
    return model(page, "measured", "m.data.x.length")


def text(page, name: str) -> str:
    return re.sub(r"<[^>]+>", " ", model(page, name, "m.text"))


def click(page, label: str, name: str) -> None:
    """Click the button ``label`` (model ``name``) once it is enabled."""
    wait_for(
        lambda: not model(page, name, "m.disabled"), f"{label} enabled", lambda: text(page, "state")
    )
    page.get_by_role("button", name=label).click()


def wait_for(condition, what: str, state=None, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}" + (f"; {state()}" if state else ""))
        time.sleep(0.05)


def journaled(out: Path) -> list:
    with Journal(out / "journal.sqlite", read_only=True) as journal:
        return journal.measurements()


def save_screenshot(page, tmp_path: Path, name: str, report) -> Path:
    path = tmp_path / name
    page.screenshot(path=path, full_page=True)
    where = [str(path)]
    if folder := os.environ.get("DKLSCOPE_TEST_ARTEFACTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        where.append(str(shutil.copy(path, Path(folder) / name)))
    report(f"live view screenshot: {', '.join(where)}")
    return path


@pytest.fixture
def report(request):
    """Write a line to the terminal, past pytest's capture."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")

    def write(line: str) -> None:
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(line)

    return write


@pytest.mark.slow
def test_the_live_view_follows_pauses_and_stops_a_campaign(browser, tmp_path, report):
    started = time.monotonic()
    config_path = tmp_path / "c.yaml"
    config_path.write_text(CONFIG)
    out = tmp_path / "run"
    out.mkdir()
    run = None
    try:
        with view(str(out), "--controls") as url:  # before the campaign: it waits for one
            page, hosts = open_page(browser, url)
            assert "WAITING" in text(page, "state") and points(page) == 0
            run = start_run(config_path, "--out", str(out))
            wait_for(lambda: points(page) >= 6, "six points on the page")
            grown = [points(page)]

            click(page, "Pause", "pause")
            wait_for(lambda: "PAUSED" in text(page, "state"), "the pause")
            n = len(journaled(out))
            wait_for(lambda: points(page) == n, "the page to show every journaled point")
            time.sleep(1.0)
            assert len(journaled(out)) == n and points(page) == n  # nothing measured
            assert model(page, "pause", "m.disabled") and not model(page, "resume", "m.disabled")

            click(page, "Resume", "resume")
            wait_for(lambda: "RUNNING" in text(page, "state"), "the resume")
            seen = {}  # points on the page -> when (Unix s) the page first showed them
            deadline = time.monotonic() + 60
            while points(page) < n + 6 and time.monotonic() < deadline:
                seen.setdefault(points(page), time.time())
                time.sleep(0.01)
            grown.append(points(page))
            assert grown[-1] >= n + 6

            latency = text(page, "latency")
            assert re.search(r"decision latency\s+\d+(\.\d+)? (ms|s)\s+median", latency), latency
            assert model(page, "timeline", "m.data.seq.length") >= grown[-1] - 1
            assert model(page, "mean", "m.data.image.length") == 1  # the model's maps

            click(page, "Stop after this measurement", "stop")
            assert run.wait(timeout=120) == 130, run.stdout.read().decode()
            history = journaled(out)
            wait_for(lambda: "STOPPED" in text(page, "state"), "the stop")
            wait_for(lambda: points(page) == len(history), "every measurement on the page")
            grown.append(points(page))
            assert OPERATOR_STOP in text(page, "state")
            assert model(page, "stop", "m.disabled")
            save_screenshot(page, tmp_path, "live-view-stopped.png", report)
            assert hosts == {urlparse(url).netloc}  # nothing from anywhere else
            page.close()
    finally:
        if run is not None and run.poll() is None:
            run.kill()

    assert grown == sorted(grown) and grown[-1] == len(history) < N_PLANNED
    assert all(m.status == "ok" for m in history)
    with Journal(out / "journal.sqlite", read_only=True) as journal:
        kinds = [e["kind"] for e in journal.events() if e["kind"] != "model"]
        (stopped,) = journal.events("run_stopped")
    assert kinds == ["run_started", "paused", "parked", "resumed", "parked", "run_stopped"]
    assert stopped["reason"] == OPERATOR_STOP
    # The page showed each measurement this long after it was journaled (for the record).
    delays = [t - history[n - 1].t_done for n, t in seen.items() if 0 < n <= len(history)]
    if delays:
        report(
            f"live view: a measurement reached the page {1000 * statistics.median(delays):.0f} ms "
            f"(median of {len(delays)}) after it was journaled"
        )

    resumed = start_run(config_path, "--resume", str(out))  # the journal is resumable
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()
    history = journaled(out)
    assert len(history) == N_PLANNED and len({m.decision for m in history}) == N_PLANNED

    with Journal(out / "journal.sqlite") as journal:  # a last model record, flagged
        journal.log_event("model", **model_detail(N_PLANNED - 1, "overconfident", 0.71))

    with view(str(out)) as url:  # the finished campaign, read-only
        page, hosts = open_page(browser, url)
        wait_for(lambda: model(page, "model_warning", "m.visible"), "the model's warning")
        assert "the error bars are too narrow" in text(page, "model_warning")
        assert "dkl-ensemble" in text(page, "model") and "z sd 1.08" in text(page, "model")
        wait_for(lambda: points(page) == N_PLANNED, "every point of the finished campaign")
        wait_for(lambda: model(page, "mean", "m.data.image.length") == 1, "the maps")
        buttons = page.evaluate(
            "() => [...Bokeh.documents[0].all_models].filter(m => m.type === 'Button').length"
        )
        assert buttons == 0 and "read-only" in text(page, "read_only")
        assert "STOPPED" in text(page, "state") and "budget of steps spent" in text(page, "state")
        save_screenshot(page, tmp_path, "live-view-finished.png", report)
        assert hosts == {urlparse(url).netloc}
        page.close()
    report(f"live view browser test: {time.monotonic() - started:.0f} s")


def test_controls_are_refused_on_a_page_that_listens_beyond_loopback(tmp_path, capsys):
    from dklscope.cli import main

    assert main(["view", str(tmp_path), "--controls", "--bind", "0.0.0.0"]) == 2
    assert "--controls with --bind 0.0.0.0" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["view", str(tmp_path), "--control", "tcp://127.0.0.1:5601"]) == 2
    assert "--control goes with an events address" in capsys.readouterr().err


def test_the_page_shows_the_model_and_warns_in_red_while_it_is_flagged():
    """In this process, without a browser: the page's model card and warning follow the
    newest model record."""
    from concurrent.futures import ThreadPoolExecutor

    from bokeh.document import Document

    from dklscope.observe.live import LiveCampaign
    from dklscope.observe.model_records import ModelRecord
    from dklscope.observe.page import Page as _Page

    live = LiveCampaign(title="run", source="journal", state="running")
    with ThreadPoolExecutor(1) as executor:
        page = _Page(Document(), live, None, executor)
        assert not page.model_warning.visible and "no model records" in page.model_card.text
        with live.lock:
            live.model = ModelRecord.from_event(model_detail(7, "overconfident", 0.71))
        live.changed()
        page.refresh()
        assert page.model_warning.visible
        assert (
            "95 % intervals held only 71 % and 50 % intervals 47 % of left-out measurements: "
            "the error bars are too narrow" in page.model_warning.text
        )
        assert "decision 7" in page.model_warning.text
        card = page.model_card.text
        assert "dkl-ensemble" in card and "overconfident" in card
        assert "dkl-ensemble 0.90 · gp-xy 0.10" in card  # the weights, largest first
        assert "50 % 0.47 · 95 % 0.71 · z sd 1.08" in card
        with live.lock:
            live.model = ModelRecord.from_event(model_detail(8))
        live.changed()
        page.refresh()
        assert not page.model_warning.visible  # the newest record is calibrated
        assert "overconfident" not in page.model_card.text and "decision 8" in page.model_card.text

"""The web page in a real headless Chromium: upload -> bars; fake microphone -> live finals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import soundfile as sf

from emocore.audio import SAMPLE_RATE
from server.settings import Settings
from tests.server.speech_clips import three_utterances
from tests.server.uvicorn_thread import live_server

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("EMODISTILL_SCREENSHOTS", "/tmp/emodistill-screenshots"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.is_file(), reason="/usr/bin/chromium missing (Debian chromium; make sys-deps)"
    ),
]


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    clip = three_utterances(lead_s=0.3, gap_s=0.8, tail_s=2.0)
    path = tmp_path_factory.mktemp("browser") / "three.wav"
    sf.write(path, clip.samples, SAMPLE_RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def page_url(tiny_model_dir):
    with live_server(Settings(model_dir=tiny_model_dir, threads=1)) as server:
        yield server.url


@pytest.fixture
def browser(speech_wav):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={speech_wav}"],
        )
        try:
            yield browser
        finally:
            browser.close()


def test_live_microphone_shows_final_utterances(browser, page_url):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_url + "/")
    page.wait_for_selector("#model-info:has-text('Labels')")
    page.click("#record")
    page.wait_for_selector("#utterances li.final >> nth=1", timeout=25_000)
    finals = page.locator("#utterances li.final")
    labels = finals.evaluate_all("items => items.map(item => item.dataset.label)")
    assert len(labels) >= 2
    assert set(labels) <= {"neutral", "happy", "angry", "sad"}
    assert page.locator("#timeline .span.final").count() >= 2
    assert page.locator("#utterances li.final .bars .fill").count() >= 8
    # a model without dimensions: no plot, and min_confidence 0 marks nothing uncertain
    assert page.locator("#affect").is_hidden()
    assert page.locator("#utterances li.final .uncertain:visible").count() == 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "live.png"), full_page=True)
    page.click("#stop")
    page.wait_for_selector("#live-status:has-text('Stopped')", timeout=10_000)
    assert not errors


def test_upload_shows_probability_bars(browser, page_url, speech_wav):
    page = browser.new_page()
    page.goto(page_url + "/")
    page.set_input_files("#upload-file", str(speech_wav))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-result .bars")
    widths = page.locator("#upload-result .bars .fill").evaluate_all(
        "fills => fills.map(fill => parseFloat(fill.style.width))"
    )
    assert len(widths) == 4 and abs(sum(widths) - 100) < 1
    page.check("#upload-segment")
    page.click("#upload-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#upload-result .prediction').length === 3")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "upload.png"), full_page=True)


def test_page_streams_with_an_api_key_it_never_puts_in_the_url(browser, tiny_model_dir):
    """With keys configured, the page sends its key as a websocket subprotocol: the stream
    opens, and the URL the server saw carries no key."""
    key = "page-k\u00e9y/+="
    with live_server(Settings(model_dir=tiny_model_dir, threads=1, api_keys=[key])) as server:
        page = browser.new_page()
        urls: list[str] = []
        page.on("websocket", lambda ws: urls.append(ws.url))
        page.goto(server.url + "/")
        page.fill("#api-key", key)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.click("#record")
        # ":has-text" ignores case, and "Cannot record: ..." would match "Recording": wait for
        # the status the `ready` event sets, and say what the page showed when it never came.
        recording = "() => /^Recording: /.test(document.getElementById('live-status').textContent)"
        try:
            # 45 s: on 2 cores busy with other work the microphone and worklet took over 15.
            page.wait_for_function(recording, timeout=45_000)
            page.wait_for_timeout(1000)
            assert page.is_enabled("#stop"), "the stream closed by itself"
        except (AssertionError, pytest.importorskip("playwright.sync_api").Error) as error:
            status = page.text_content("#live-status")
            pytest.fail(f"no live stream ({error}): status {status!r}, console {console}")
        page.click("#stop")
        page.wait_for_selector("#live-status:has-text('Stopped')", timeout=20_000)
    assert urls and all("api_key" not in url and "page-k" not in url for url in urls)


def test_dimensions_plot_a_point_per_final_and_uncertain_results_say_so(
    browser, dims_model_dir, speech_wav
):
    """A model with dimensions: the valence-arousal plot (axes 1-5, labelled) gets one point
    per final; min_confidence above every answer marks each result uncertain."""
    settings = Settings(model_dir=dims_model_dir, threads=1, min_confidence=0.99)
    with live_server(settings) as server:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url + "/")
        page.wait_for_selector("#model-info:has-text('Dimensions: arousal, valence, dominance')")
        assert page.locator("#affect").is_visible()
        ticks = page.locator("#affect-plot text.tick.x").all_text_contents()
        assert ticks == ["1", "2", "3", "4", "5"]
        assert page.locator("#affect-plot text.axis-name").all_text_contents() == [
            "valence",
            "arousal",
        ]
        page.set_input_files("#upload-file", str(speech_wav))
        page.click("#upload-form button[type=submit]")
        page.wait_for_selector("#upload-result .bars")
        assert page.locator("#upload-result .uncertain").count() == 1
        assert "valence" in page.locator("#upload-result .dimensions").inner_text()
        page.click("#record")
        page.wait_for_selector("#utterances li.final", timeout=25_000)
        page.click("#stop")  # the utterance in progress, if any, gets its final too
        page.wait_for_selector("#live-status:has-text('Stopped')", timeout=10_000)
        finals = page.locator("#utterances li.final")
        points = page.locator("#affect-plot circle.point")
        assert points.count() == finals.count() >= 1
        for cx, cy in points.evaluate_all(
            "ps => ps.map(p => [p.cx.baseVal.value, p.cy.baseVal.value])"
        ):
            assert 30 <= cx <= 230 and 10 <= cy <= 210  # inside the plot's square
        assert page.locator("#utterances li.final .uncertain:visible").count() == finals.count()
        assert "arousal" in finals.first.locator(".dimensions").inner_text()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "dimensions.png"), full_page=True)
    assert not errors


def test_page_stops_sending_on_closing_and_says_the_results_are_complete(browser, page_url):
    """The drain as the page sees it (a mocked socket): `closing`, then close 1001."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    frames_after_closing: list[int] = []

    def server(ws):
        closing = {"sent": False}

        def received(message):
            if closing["sent"] and not isinstance(message, str):
                frames_after_closing.append(len(message))

        ws.on_message(received)
        ready = {"type": "ready", "sample_rate": 16000, "session_id": "0123456789abcdef"}
        ws.send(json.dumps(ready))
        page.wait_for_timeout(300)  # the microphone streams for a moment
        ws.send(json.dumps({"type": "closing", "reason": "shutting_down", "deadline_s": 5}))
        closing["sent"] = True
        page.wait_for_timeout(300)
        ws.close(code=1001, reason="shutting_down")

    page.route_web_socket(lambda url: "/v1/stream" in url, server)
    page.goto(page_url + "/")
    page.wait_for_selector("#model-info:has-text('Labels')")
    page.click("#record")
    status = page.locator("#live-status")
    status.filter(has_text="every result above is complete").wait_for(timeout=10_000)
    assert "error" not in (status.get_attribute("class") or "")
    assert page.locator("#record").is_enabled()
    assert len(frames_after_closing) <= 1  # at most a frame already on its way
    assert not errors

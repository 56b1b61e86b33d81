"""The drawing page in a real headless Chromium (Debian's /usr/bin/chromium via Playwright).

Draws a digit with mouse events, reads the answer, the per-class bars and the model-input
preview off the page. ``OCR_SCREENSHOT=docs/screenshot.png`` (``make screenshot``) also saves
the page, served with the shipped model when there is one, as the README's screenshot.
"""

import json
import math
import os
import re

import pytest

from ocr_testing.server_utils import REPO, digit_png, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHIPPED_MODEL = REPO / "models" / "default"
SCREENSHOT = os.environ.get("OCR_SCREENSHOT")

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} missing (`make test` installs it)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feedback")


@pytest.fixture(scope="module")
def server(small_model_path, tmp_path_factory, feedback_dir):
    shipped = SHIPPED_MODEL.with_suffix(".json").exists()
    model = str(SHIPPED_MODEL) if SCREENSHOT and shipped else small_model_path
    env = {"OCR_FEEDBACK_DIR": str(feedback_dir)}
    with running_server(model, tmp_path_factory.mktemp("web"), env=env, workers=1) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 900, "height": 560})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # CSP violations and missing assets show up as console errors; the 400 is the one that
    # test_an_unreadable_upload_shows_the_error asks for.
    expected = "the server responded with a status of 400"
    page.on("console", lambda m: m.type == "error" and expected not in m.text
            and errors.append(m.text))  # fmt: skip
    page.goto(server.url + "/")
    expect(page.locator("#model")).to_have_text(re.compile(r"^model "))
    yield page
    page.close()
    assert errors == []


def _ring_points(page, steps: int = 40, across: float = 0.5) -> list[tuple[float, float]]:
    """A "0": an upright ellipse on the canvas, ``across`` its width, in page coordinates."""
    box = page.locator("#canvas").bounding_box()
    cx, cy = box["x"] + box["width"] * across, box["y"] + box["height"] / 2
    rx, ry = box["height"] * 0.2, box["height"] * 0.32
    return [(cx + rx * math.sin(2 * math.pi * i / steps),
             cy - ry * math.cos(2 * math.pi * i / steps)) for i in range(steps + 2)]  # fmt: skip


def _draw_ring(page, across: float = 0.5) -> None:
    """Draw the ring as one mouse stroke."""
    points = _ring_points(page, across=across)
    page.mouse.move(*points[0])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=2)
    page.mouse.up()


def _classes(server) -> list[str]:
    return server.get("/v1/model").json()["classes"]


def test_drawing_a_zero_shows_zero_with_bars_and_model_input(page, server):
    _draw_ring(page)
    expect(page.locator("#result-text")).not_to_have_text("–")
    assert page.locator("#result-text").text_content() == "0"
    character = page.locator(".character")
    assert character.count() == 1
    bars = character.locator(".bar")
    assert bars.count() == len(_classes(server))  # a confidence bar for every class
    assert bars.first.get_attribute("data-char") == "0"
    assert float(bars.first.get_attribute("data-p")) > 0.5
    preview = character.locator(".seen canvas")
    size = preview.evaluate("c => [c.width, c.height]")
    info = server.get("/v1/model").json()["input"]
    assert size == [info["width"], info["height"]]
    if SCREENSHOT:
        target = REPO / SCREENSHOT
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)


_INK_PIXELS = "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data" \
    ".filter((v, i) => i % 4 === 0 && v < 128).length"


def test_pen_width_and_clear(page):
    inked = {}
    for width in ("6", "40"):
        page.locator("#pen-width").fill(width)
        _draw_ring(page)
        expect(page.locator("#result-text")).not_to_have_text("–")
        inked[width] = page.locator("#canvas").evaluate(_INK_PIXELS)
        page.locator("#clear").click()
        assert page.locator("#result-text").text_content() == "–"
        assert page.locator(".character").count() == 0
        assert page.locator("#canvas").evaluate(_INK_PIXELS) == 0
    assert inked["40"] > 3 * inked["6"] > 0


def test_drawing_with_a_finger(browser, server):
    context = browser.new_context(has_touch=True, viewport={"width": 900, "height": 560})
    page = context.new_page()
    page.goto(server.url + "/")
    expect(page.locator("#model")).to_have_text(re.compile(r"^model "))
    touch = context.new_cdp_session(page)
    points = _ring_points(page)
    for kind, (x, y) in [("touchStart", points[0])] + [("touchMove", p) for p in points[1:]]:
        touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    expect(page.locator("#result-text")).not_to_have_text("–")
    assert page.locator("#result-text").text_content() == "0"
    context.close()


def test_uploading_a_file_recognises_it(page, tmp_path):
    path = tmp_path / "one.png"
    path.write_bytes(digit_png("1", size=200))
    page.locator("#upload").set_input_files(str(path))
    expect(page.locator("#result-text")).not_to_have_text("–")
    assert page.locator("#result-text").text_content() == "1"


def test_an_unreadable_upload_shows_the_error(page, tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"this is not a picture")
    page.locator("#upload").set_input_files(str(path))
    expect(page.locator("#status")).to_have_class(re.compile(r"\berror\b"))
    assert "not a readable image" in page.locator("#status").text_content()


def _corrections(feedback_dir, label: str) -> list[dict]:
    folder = feedback_dir / label / ".records"
    return [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.exists() else []


def test_correcting_a_reading_keeps_it_as_training_data(page, feedback_dir):
    _draw_ring(page)
    expect(page.locator("#result-text")).to_have_text("0")
    expect(page.locator("#correction")).to_be_visible()
    field = page.locator(".character .fix")
    assert field.input_value() == "0"  # prefilled with the reading
    field.fill("6")
    page.locator("#send-correction").click()
    expect(page.locator("#correction-status")).to_have_text(re.compile(r"^saved 1 character"))
    (record,) = _corrections(feedback_dir, "6")
    assert record["read"] == "0" and record["label"] == "6"
    assert (feedback_dir / "6" / f"{record['id']}.png").exists()


def test_a_correction_needs_every_field(page, feedback_dir):
    before = sorted(feedback_dir.rglob("*.json"))
    _draw_ring(page)
    expect(page.locator("#result-text")).to_have_text("0")
    page.locator(".character .fix").fill("")
    page.locator("#send-correction").click()
    expect(page.locator("#correction-status")).to_have_class(re.compile(r"\berror\b"))
    assert "every field" in page.locator("#correction-status").text_content()
    assert sorted(feedback_dir.rglob("*.json")) == before


def test_a_row_of_characters_on_the_wide_sheet(page, feedback_dir):
    page.locator("#wide").check()
    assert page.locator("#canvas").evaluate("c => [c.width, c.height]") == [840, 280]
    sheet = page.locator("#canvas").bounding_box()
    for across in (0.2, 0.5, 0.8):
        _draw_ring(page, across=across)
    expect(page.locator(".character")).to_have_count(3)
    assert page.locator("#result-text").text_content() == "000"
    boxes = [page.locator(".box").nth(i).bounding_box() for i in range(3)]
    for box, across in zip(boxes, (0.2, 0.5, 0.8), strict=True):
        centre = sheet["x"] + sheet["width"] * across
        assert box["x"] < centre < box["x"] + box["width"]  # the box is on its ring
        assert sheet["y"] <= box["y"] and box["y"] + box["height"] <= sheet["y"] + sheet["height"]
    fields = page.locator(".character .fix")
    for i, digit in enumerate("072"):
        fields.nth(i).fill(digit)
    page.locator("#send-correction").click()
    expect(page.locator("#correction-status")).to_have_text(re.compile(r"^saved 3 character"))
    assert [r["read"] for r in _corrections(feedback_dir, "7")] == ["0"]
    assert [r["read"] for r in _corrections(feedback_dir, "2")] == ["0"]


def test_no_correction_panel_where_the_server_keeps_none(browser, server):
    page = browser.new_page(viewport={"width": 900, "height": 560})
    page.route("**/v1/feedback", lambda route: route.fulfill(
        status=404, content_type="application/json",
        body='{"error": {"code": "not_found", "message": "off"}}'))  # fmt: skip
    page.goto(server.url + "/")
    expect(page.locator("#model")).to_have_text(re.compile(r"^model "))
    _draw_ring(page)
    expect(page.locator("#result-text")).to_have_text("0")
    assert page.locator("#correction").is_hidden()
    page.close()

"""The demo end to end: a real server process, driven by headless Chromium (Playwright) and gradio_client.

Needs gradio, gradio_client, playwright (pip) and Debian's chromium. Without them the tests skip, except
under CI (``CI`` set), where they must run. ``ANYGEN_UPDATE_DOCS_SCREENSHOT=1`` also copies the screenshot
(``test-artifacts/demo.png``) to ``docs/demo.png``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("ANYGEN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL = "apt-get install -y chromium; pip install -e '.[demo]' playwright"
ANSWER_TIMEOUT_MS = 90_000


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _require(*modules: str, chromium: bool = False) -> None:
    """Skip (outside CI) or fail (in CI) when a tool the test needs is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if chromium and not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"chromium ({CHROMIUM})")
    if not missing:
        return
    reason = f"the demo end-to-end tests need {', '.join(missing)} (install: {INSTALL})"
    if _in_ci():
        pytest.fail(f"CI is set, so {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python demo/app.py`` on a free port (one torch thread); yields its URL."""
    _require("gradio", "gradio_client")
    port = _free_port()
    logs = tmp_path_factory.mktemp("demo-server")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(logs / "gradio"),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    log = (logs / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "demo/app.py", "--port", str(port), "--threads", "1"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"the demo server exited ({proc.returncode}):\n{(logs / 'server.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the demo server did not start in 180 s:\n{(logs / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    _require("playwright", chromium=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(server)
    page.wait_for_selector("#chat-input textarea")
    yield page
    page.close()


@pytest.fixture(scope="module")
def picture(tmp_path_factory, samples) -> Path:
    """A photo to attach (the NExT-GPT sample bird when present, else a generated gradient)."""
    bird = samples / "assets" / "bird_image.jpg"
    if bird.is_file():
        return bird
    path = tmp_path_factory.mktemp("media") / "gradient.png"
    x = np.linspace(0, 255, 128, dtype=np.uint8)
    Image.fromarray(np.stack(np.broadcast_arrays(x[None, :], x[:, None], 128 - x[None, :] // 2), -1)).save(
        path
    )
    return path


def _send(page, text: str, files: list[Path] = (), want: tuple[str, ...] = ()) -> None:
    """Type, attach, tick the outputs to guarantee, and press Enter."""
    for kind in ("image", "video", "audio"):
        box = page.locator(f"#output-modalities input[name={kind}]")
        box.set_checked(kind in want)
    page.locator("#chat-input textarea").fill(text)
    if files:
        page.locator("#chat-input input[type=file]").set_input_files([str(f) for f in files])
        # The upload is done when its thumbnails show.
        page.locator("#chat-input .thumbnails .thumbnail-item").nth(len(files) - 1).wait_for()
    page.locator("#chat-input textarea").press("Enter")


def _answered(page, count: int) -> None:
    """Wait until ``count`` assistant answers are complete (the input is enabled again)."""
    page.wait_for_function(
        """n => document.querySelectorAll('#chatbot .bot-row').length >= n
               && !document.querySelector('#chat-input textarea').disabled""",
        arg=count,
        timeout=ANSWER_TIMEOUT_MS,
    )


def test_chat_with_an_image_answers_with_an_image(page, picture):
    _send(page, "What bird is this? Draw it flying.", [picture], want=("image",))
    answer_image = page.locator("#chatbot [data-testid=bot] img").first
    answer_image.wait_for(timeout=ANSWER_TIMEOUT_MS)
    _answered(page, 1)
    # The question keeps its photo, and the answer's image is a loaded picture.
    assert page.locator("#chatbot [data-testid=user] img").count() == 1
    page.wait_for_function(
        "() => { const i = document.querySelector('#chatbot [data-testid=bot] img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("ANYGEN_UPDATE_DOCS_SCREENSHOT"):
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "demo.png")


def test_corrupt_upload_is_reported_in_the_chat_and_the_next_request_works(page, picture, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG file")
    _send(page, "What is in this picture?", [broken], want=("image",))
    error = page.locator("#chatbot [data-testid=bot]").filter(has_text="could not be read as an image file")
    error.wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert "broken.png" in error.inner_text()
    _answered(page, 1)
    _send(page, "Then look at this one and draw it.", [picture], want=("image",))
    page.locator("#chatbot [data-testid=bot] img").first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    _answered(page, 2)
    page.screenshot(path=str(ARTIFACTS / "demo-corrupt-upload.png"))


def test_gradio_client_generate(server, picture, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from anygen.media import Audio, Video

    client = Client(server, verbose=False, download_files=str(tmp_path))
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]
    names = [p["parameter_name"] for p in info["parameters"]]
    assert names[:6] == ["prompt", "image", "audio", "video", "output_modalities", "seed"]
    assert {"max_new_tokens", "temperature", "top_p", "num_inference_steps", "guidance_scale"} <= set(names)
    assert [p["parameter_has_default"] for p in info["parameters"]][1:] == [True] * (len(names) - 1)

    text, image, video, audio = client.predict(
        prompt="A bird singing on a branch",
        image=handle_file(str(picture)),
        output_modalities=["image", "video", "audio"],
        seed=0,
        api_name="/generate",
    )
    assert isinstance(text, str)
    assert Image.open(image).size[0] > 0
    assert Video.load(video).num_frames > 0
    assert Audio.load(audio).waveform.size > 0

    text, image, video, audio = client.predict(prompt="hello", output_modalities=[], api_name="/generate")
    assert isinstance(text, str)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(AppError, match="could not be read as an image file"):
        client.predict(prompt="what is this?", image=handle_file(str(broken)), api_name="/generate")


def test_regenerate_and_clear(page):
    _send(page, "Make a sound of rain.", want=("audio",))
    page.locator("#chatbot .bot-row audio").first.wait_for(state="attached", timeout=ANSWER_TIMEOUT_MS)
    _answered(page, 1)
    # Note when the input is locked (the answer being remade), however briefly.
    page.evaluate(
        """() => { const t = document.querySelector('#chat-input textarea'); window.sawLocked = false;
                   new MutationObserver(() => { if (t.disabled) window.sawLocked = true; })
                       .observe(t, {attributes: true}); }"""
    )
    page.locator("#regenerate").click()
    page.wait_for_function("() => window.sawLocked", timeout=ANSWER_TIMEOUT_MS)
    _answered(page, 1)
    page.locator("#chatbot .bot-row audio").first.wait_for(state="attached", timeout=ANSWER_TIMEOUT_MS)
    # The answer is replaced, not added to: still one question and one answer.
    assert page.locator("#chatbot .user-row").count() == 1 and page.locator("#chatbot .bot-row").count() == 1
    page.locator("#clear").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message-row').length === 0")

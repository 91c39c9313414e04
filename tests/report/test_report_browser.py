"""The HTML report in a real headless browser (Debian Chromium via selenium + chromedriver).

The page is served from a local ``http.server`` on 127.0.0.1; the test asserts that it loads with
no console error or failed resource, that every figure is decoded and laid out with a non-zero
size, and that every table-of-contents link has a target. A broken page served next to it checks
that the same probes do catch a missing image. CI installs Chromium with
``.ci/install_chromium.sh``; without ``/usr/bin/chromium`` the test is skipped.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from divssl.report import SECTIONS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent (CI installs it with .ci/install_chromium.sh)",
)

PROBE = """
const figures = Array.from(document.querySelectorAll('figure img, svg')).map(el => {
  const r = el.getBoundingClientRect();
  return {tag: el.tagName.toLowerCase(), width: r.width, height: r.height,
          complete: el.complete === undefined ? true : el.complete,
          natural: el.naturalWidth === undefined ? r.width : el.naturalWidth};
});
const links = Array.from(document.querySelectorAll('nav a[href^="#"]'))
  .map(a => a.getAttribute('href').slice(1));
const missing = links.filter(id => !document.getElementById(id));
return {ready: document.readyState, title: document.title, figures: figures,
        links: links.length, missing: missing,
        sections: document.querySelectorAll('main section').length};
"""


@pytest.fixture(scope="module")
def server(full_report) -> Iterator[str]:
    """Serve the report folder on 127.0.0.1 (any free port) in a daemon thread."""
    root, _ = full_report
    out = root / "report"
    (out / "broken.html").write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"><title>broken</title></head>'
        '<body><figure><img src="figures/does_not_exist.png" alt="x"></figure></body></html>'
    )
    handler = functools.partial(_QuietHandler, directory=str(out))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        """Keep the test output clean."""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1024",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _load(browser: Any, url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    browser.get(url)
    result = browser.execute_script(PROBE)
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    return result, errors


def test_report_renders_in_chromium(browser: Any, server: str, full_report) -> None:
    _, paths = full_report
    n_figures = sum(1 for k in paths if k.endswith(".svg"))
    result, errors = _load(browser, f"{server}/report.html")
    assert errors == []
    assert result["ready"] == "complete" and result["title"].startswith("divssl study report")
    n_sections = len(SECTIONS)
    assert result["sections"] == n_sections and result["missing"] == []
    assert result["links"] > n_sections
    imgs = [f for f in result["figures"] if f["tag"] == "img"]
    assert len(imgs) == n_figures
    for fig in imgs:
        assert fig["complete"] and fig["natural"] > 0
        assert fig["width"] > 100 and fig["height"] > 100


def test_probe_catches_a_broken_page(browser: Any, server: str) -> None:
    result, errors = _load(browser, f"{server}/broken.html")
    assert any("does_not_exist.png" in e["message"] for e in errors)
    assert result["figures"][0]["natural"] == 0

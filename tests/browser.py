"""Headless Chromium for the tests that check what a real browser renders (report.html, optuna-dashboard).

The browser tests skip when no Chromium is installed, unless ``DLAB_REQUIRE_BROWSER=1`` (CI: ``.ci/run``
installs Debian's ``chromium`` when missing), where they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BROWSER_TIMEOUT_S = 120
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def browser() -> str:
    """The Chromium on PATH; skips the test without one, unless DLAB_REQUIRE_BROWSER=1."""
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        if os.environ.get("DLAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"DLAB_REQUIRE_BROWSER=1 but none of {', '.join(BROWSERS)} is on PATH")
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) on PATH")
    return found


def run_browser(address: Path | str, profile: Path, *extra: str) -> str:
    """Open ``address`` (a file, or a URL) in headless Chromium with the ``extra`` flags (``--dump-dom``,
    ``--screenshot=...``); its standard output (the DOM with ``--dump-dom``)."""
    url = address.as_uri() if isinstance(address, Path) else address
    command = [browser(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout

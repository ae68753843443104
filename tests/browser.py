"""Headless Debian Chromium for browser tests (Playwright drives it), and where their screenshots go."""

from __future__ import annotations

import shutil

from tests.helpers import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots a test run keeps for a reviewer (git-ignored, like everything under .data/).
SCREENSHOTS = ROOT / ".data" / "test-artifacts"

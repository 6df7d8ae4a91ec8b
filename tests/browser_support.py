"""Playwright driving the distribution's Chromium (`apt-get install chromium`; no browser
download), and where the screenshots go (test artefacts, kept after the run)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("SAVEOS_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
CHROMIUM = os.environ.get("SAVEOS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-first-run",
]


def launch(playwright):
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class Shots:
    """Numbered full-page screenshots in ARTIFACTS/<name>/."""

    def __init__(self, name: str):
        self.dir = ARTIFACTS / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.count = 0

    def __call__(self, page, label: str) -> Path:
        self.count += 1
        path = self.dir / f"{self.count:02d}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

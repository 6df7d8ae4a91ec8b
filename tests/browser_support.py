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


def spki_pin(cert_file: Path) -> str:
    """Chromium's pin of a certificate: base64 of the SHA-256 of its public key (SPKI)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(cert_file.read_bytes()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def launch(playwright, trust_cert: Path | None = None):
    """Chromium; with trust_cert, that one server certificate is accepted (pinned by its key,
    as the fleet's own CA is not in the browser's store) and no other is."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    args = list(CHROMIUM_ARGS)
    if trust_cert is not None:
        args.append(f"--ignore-certificate-errors-spki-list={spki_pin(trust_cert)}")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args)


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

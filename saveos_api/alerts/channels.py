"""Alert channels: Apprise URLs checked, sealed at rest, shown redacted, matched to hosts.

A channel URL carries its service's secret (a webhook token, an SMTP password), so it is
stored encrypted with a key derived from the server secret, compared by HMAC, shown only as
`scheme://host/…`, and Apprise's own log lines (which may print it) never reach the server log:
they are captured per send (apprise_log) and redacted before they are stored or logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from saveos_api.alerts.levels import LEVELS, level_of

APPRISE_LOGGER = "apprise"
MAX_URL = 4096


class ChannelError(ValueError):
    """A channel URL or option that cannot be used; the message says why (never the URL)."""


# ---- Apprise, quiet ------------------------------------------------------------------------


class _ThreadCapture(logging.Handler):
    """Collects Apprise's warnings per thread, for apprise_log()."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        lines = getattr(self.local, "lines", None)
        if lines is not None:
            lines.append(record.getMessage())


@cache
def _capture() -> _ThreadCapture:
    handler = _ThreadCapture()
    logging.getLogger(APPRISE_LOGGER).addHandler(handler)
    return handler


@contextmanager
def apprise_log() -> Iterator[list[str]]:
    """Apprise's warnings and errors in this thread while the block runs (unredacted)."""
    handler = _capture()
    # Apprise logs URLs (some with their tokens) when it loads and sends: never to our log.
    # Set on every use, not once: a logging configuration applied later may reset it.
    logging.getLogger(APPRISE_LOGGER).propagate = False
    handler.local.lines = lines = []
    try:
        yield lines
    finally:
        handler.local.lines = None


@cache
def _apprise():
    import apprise

    _capture()
    return apprise


def asset_with(timeout_s: float = 30.0):
    """Sends in the calling thread (its log lines stay with it), within `timeout_s`."""
    return _apprise().AppriseAsset(async_mode=False, service_timeout=timeout_s)


@cache
def known_schemes() -> frozenset[str]:
    schemas = _apprise().Apprise().details()["schemas"]
    found: set[str] = set()
    for entry in schemas:
        for key in ("protocols", "secure_protocols"):
            found.update(p.lower() for p in entry.get(key) or ())
    return frozenset(found)


def load(url: str):
    """The Apprise plugin for `url`; ChannelError saying what is wrong with it."""
    if not isinstance(url, str) or not url.strip():
        raise ChannelError("the channel URL is empty")
    url = url.strip()
    if len(url) > MAX_URL:
        raise ChannelError(f"the channel URL is longer than {MAX_URL} characters")
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else ""
    if not scheme:
        raise ChannelError(
            "the channel URL has no scheme: expected an Apprise URL such as "
            "mailtos://user:pass@smtp.example.com, json://host/path or ntfys://topic"
        )
    if scheme not in known_schemes():
        raise ChannelError(
            f"unknown notification scheme {scheme!r}: not one of Apprise's "
            f"{len(known_schemes())} services (see the Apprise wiki for URL formats)"
        )
    with apprise_log() as lines:
        plugin = _apprise().Apprise.instantiate(url, asset=asset_with())
    if plugin is None:
        # Apprise's own lines that quote the URL (even masked) are left out.
        said = [redact(line, url) for line in lines if "://" not in line]
        why = "; ".join(said) or "Apprise could not parse it"
        raise ChannelError(f"the {scheme}:// URL is not usable: {why}")
    return plugin


def display(url: str, plugin=None) -> str:
    """`scheme://host[:port]/…` with what Apprise itself masks masked: never the secret."""
    plugin = plugin or load(url)
    private = urllib.parse.urlsplit(plugin.url(privacy=True))
    netloc = private.netloc
    if "@" in netloc:  # user:****@host: the user is often an address; keep only the host
        netloc = "…@" + netloc.rsplit("@", 1)[1]
    original = urllib.parse.urlsplit(url.strip())
    rest = "/…" if (original.path.strip("/") or original.query) else ""
    return f"{private.scheme}://{netloc}{rest}"[:300]


def redact(text: str, url: str) -> str:
    """`text` with every part of `url` that could be a secret replaced by ****."""
    parts = urllib.parse.urlsplit(url.strip())
    secrets = {url.strip(), parts.netloc, parts.password or "", parts.username or ""}
    secrets.update(re.split(r"[/,;:@]", parts.path))
    secrets.update(value for _key, value in urllib.parse.parse_qsl(parts.query))
    for item in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(item, "****")
        quoted = urllib.parse.quote(item, safe="")
        if quoted != item:
            text = text.replace(quoted, "****")
    return text


# ---- sealing -------------------------------------------------------------------------------


class Sealer:
    """Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from the server secret by HKDF."""

    def __init__(self, secret: bytes):
        derive = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"saveos alerts v1")
        self._fernet = Fernet(base64.urlsafe_b64encode(derive.derive(secret)))
        self._mac_key = hashlib.sha256(b"saveos alert url hash\0" + secret).digest()

    def seal(self, url: str) -> str:
        return self._fernet.encrypt(url.strip().encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ChannelError(
                "cannot decrypt the channel URL: the server secret changed since it was added; "
                "remove the channel and add it again"
            ) from None

    def digest(self, url: str) -> str:
        return hmac.new(self._mac_key, url.strip().encode(), hashlib.sha256).hexdigest()


# ---- routing -------------------------------------------------------------------------------

GROUPS_LABEL = "groups"  # set by the role: the host's inventory groups, comma-separated


def parse_labels(pairs: Iterable[str]) -> dict[str, str]:
    """`team=db` pairs into a selector; ChannelError on one without `=`."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ChannelError(f"label {pair!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def matches(selector: dict[str, str], labels: dict[str, Any] | None) -> bool:
    """Every selector pair holds for the host; `group=X` means X is one of its inventory groups."""
    labels = labels or {}
    for key, want in selector.items():
        if key == "group":
            if want not in str(labels.get(GROUPS_LABEL, "")).split(","):
                return False
        elif str(labels.get(key, "")) != want:
            return False
    return True


def check_min_status(value: str) -> str:
    if value not in LEVELS:
        raise ChannelError(f"min status {value!r} is not one of: {', '.join(LEVELS[1:])}")
    if value == "ok":
        raise ChannelError("min status 'ok' would notify every host all the time; pick 'never' up")
    return value


def wants(channel_min: str, old: str | None, new: str) -> bool:
    """A flip old -> new reaches a channel when either side is at or past its threshold
    (so the channel that heard `overdue` also hears the way back)."""
    floor = level_of(channel_min)
    return level_of(new) >= floor or (old is not None and level_of(old) >= floor)


# ---- channels from the settings ------------------------------------------------------------


@dataclass(frozen=True)
class ChannelSpec:
    url: str
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    min_status: str = "overdue"
    digest: bool = False


def specs_from_text(text: str, origin: str) -> list[ChannelSpec]:
    """JSON (a list of URLs or objects), or one URL a line (# comments)."""
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except ValueError:
            raise ChannelError(f"{origin} is not valid JSON") from None
    else:
        items = [line.strip() for line in stripped.splitlines() if line.strip() and line[:1] != "#"]
    specs = []
    for index, item in enumerate(items, 1):
        if isinstance(item, str):
            item = {"url": item}
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise ChannelError(f"{origin}: channel {index} has no url")
        unknown = set(item) - {"url", "name", "labels", "min_status", "digest"}
        if unknown:
            raise ChannelError(f"{origin}: channel {index} has unknown keys {sorted(unknown)}")
        labels = item.get("labels") or {}
        if not isinstance(labels, dict):
            raise ChannelError(f"{origin}: channel {index} labels must be an object")
        try:
            load(item["url"])
            spec = ChannelSpec(
                url=item["url"].strip(),
                name=item.get("name"),
                labels={str(k): str(v) for k, v in labels.items()},
                min_status=check_min_status(item.get("min_status", "overdue")),
                digest=bool(item.get("digest", False)),
            )
        except ChannelError as exc:
            raise ChannelError(f"{origin}: channel {index}: {exc}") from None
        specs.append(spec)
    return specs

"""How anything of SaveOS talks to the API: HTTPS verified against the fleet's own CA, plain
HTTP only to a loopback address, and never a redirect (it would resend the bearer token to
wherever the answer points). The agent, the CLI and the server's own checks use this module
(standard library only: it runs on hosts).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Optional


class InsecureUrl(ValueError):
    """A URL that would send a token in clear over a network."""


def is_loopback_host(host: Optional[str]) -> bool:
    """127.0.0.0/8, ::1 and the name localhost: traffic that never leaves the machine."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(url: str) -> str:
    """The URL, or InsecureUrl when it is http:// to anything but loopback (or not http(s))."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InsecureUrl(f"{url!r} is not an http:// or https:// URL")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise InsecureUrl(
            f"{url!r} is plain http:// to a non-loopback address: the token would cross the"
            " network in clear; use https:// (saveos ca init) or a loopback address"
        )
    return url


def ssl_context(cafile: Optional[str]):
    """Verification against `cafile` only when given (the fleet's pinned CA), else the system's
    trust store; hostname checked, TLS 1.2 at least."""
    import ssl

    context = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def opener(cafile: Optional[str]):
    """A urllib opener that verifies TLS as above and follows no redirect (a 3xx comes back as
    an HTTPError with that status, for the caller to refuse)."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
            return None

    return urllib.request.build_opener(
        NoRedirect, urllib.request.HTTPSHandler(context=ssl_context(cafile))
    )

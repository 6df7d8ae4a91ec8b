"""Where the CLI finds the API and the admin token.

The token never comes from an option value (it would land in shell history and `ps`): it comes
from SAVEOS_ADMIN_TOKEN, a 0600 config file, or the file `saveos server init` writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import saveos_rules

from saveos_cli.errors import SaveOSError

DEFAULT_API_URL = "http://127.0.0.1:8000"

# Global options from the root callback (app.py), read by the commands.
OPTIONS: dict = {"api_url": None}


def data_dir() -> Path:
    env = os.environ.get("SAVEOS_DATA_DIR")
    return Path(env) if env else Path.home() / ".local" / "share" / "saveos"


def config_file_candidates() -> list[Path]:
    return [Path.home() / ".config" / "saveos" / "cli.json", Path("/etc/saveos/cli.json")]


def read_private(path: Path) -> str:
    """A secret-bearing file's text (a token, the CA's key), refusing one that group or others
    can read: saveos_rules' one loader, its reason as the operator's one sentence."""
    return saveos_rules.read_private(str(path), SaveOSError)


def _config_file() -> tuple[Path, dict] | None:
    for path in config_file_candidates():
        if path.is_file():
            text = read_private(path)
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SaveOSError(
                    f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}."
                ) from exc
            if not isinstance(data, dict):
                raise SaveOSError(f"{path} must hold a JSON object.")
            return path, data
    return None


@dataclass
class CliConfig:
    api_url: str
    token_source: str | None = None
    _token: str | None = None

    @property
    def admin_token(self) -> str:
        if self._token is None:
            self._token, self.token_source = find_admin_token()
        return self._token


def find_admin_token() -> tuple[str, str]:
    """Return (token, where it came from); the first source that exists wins."""
    token = os.environ.get("SAVEOS_ADMIN_TOKEN", "").strip()
    if token:
        return token, "SAVEOS_ADMIN_TOKEN"
    token_file = os.environ.get("SAVEOS_ADMIN_TOKEN_FILE")
    if token_file:
        return read_private(Path(token_file)).strip(), token_file
    found = _config_file()
    if found and str(found[1].get("admin_token", "")).strip():
        return str(found[1]["admin_token"]).strip(), str(found[0])
    path = data_dir() / "admin.token"
    if path.is_file():
        token = read_private(path).strip()
        if token:
            return token, str(path)
    raise SaveOSError(
        "no admin token found.",
        hint='Set SAVEOS_ADMIN_TOKEN, write {"admin_token": ...} to ~/.config/saveos/cli.json'
        " (mode 0600), or run `saveos server init` which writes $SAVEOS_DATA_DIR/admin.token.",
    )


def tls_dir() -> Path:
    """Where `saveos ca init` keeps the fleet's CA and the server's certificate."""
    return data_dir() / "tls"


def ca_file() -> Path | None:
    """The CA the API's certificate must chain to (pinned): SAVEOS_CA_FILE, the config file's
    "ca_file", or the one `saveos ca init` made; None: the system's trust store."""
    env = os.environ.get("SAVEOS_CA_FILE")
    if env:
        return Path(env)
    found = _config_file()
    if found and found[1].get("ca_file"):
        return Path(str(found[1]["ca_file"]))
    made = tls_dir() / "ca.crt"
    return made if made.is_file() else None


def load(api_url_option: str | None) -> CliConfig:
    """Resolve the API URL: --api-url, then SAVEOS_API_URL, then the config file, then default
    (https:// when `saveos ca init` made a CA here)."""
    from saveos_agent.transport import InsecureUrl, check_api_url

    url = api_url_option or os.environ.get("SAVEOS_API_URL")
    if not url:
        found = _config_file()
        url = (found[1].get("api_url") if found else None) or default_api_url()
    url = str(url).rstrip("/")
    try:
        check_api_url(url)
    except InsecureUrl as exc:
        raise SaveOSError(f"API URL {exc}.") from None
    return CliConfig(api_url=url)


def default_api_url() -> str:
    scheme = "https" if (tls_dir() / "ca.crt").is_file() else "http"
    return f"{scheme}://127.0.0.1:8000"

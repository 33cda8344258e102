"""Where the CLI keeps the portal's URL and the caller's API token.

`$XDG_CONFIG_HOME/dbportal/config.json` (or `~/.config/dbportal/config.json`), created with mode
0600 in a 0700 folder, written atomically. DBPORTAL_URL and DBPORTAL_TOKEN in the environment win
over the file (CI jobs set them and never write a file).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dbportal" / "config.json"


@dataclass
class Settings:
    url: str | None
    token: str | None


def load() -> Settings:
    stored: dict = {}
    path = config_path()
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
    return Settings(url=os.environ.get("DBPORTAL_URL") or stored.get("url"),
                    token=os.environ.get("DBPORTAL_TOKEN") or stored.get("token"))


def save(url: str, token: str) -> Path:
    """Write the file readable by its owner only (the token is a credential)."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "token": token}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path


def forget() -> bool:
    path = config_path()
    if path.exists():
        path.unlink()
        return True
    return False

"""Where backups live: a small storage interface and its one shipped driver, a local folder.

Keys are relative paths below the backup root ("<instance>-<id>/base/<backup id>",
"<instance>-<id>/wal/<system identifier>"). The PostgreSQL tools write to a local path, so a
driver hands out a local folder for a key (`path`); a remote driver (S3-compatible) would upload
after the write and download before a restore. None ships: it would need a real, tested object
store (docs/backups.md).
"""

from __future__ import annotations

import os
import re
import shutil
from abc import ABC, abstractmethod
from pathlib import Path

from django.conf import settings

_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")


class BackupStorage(ABC):
    """Where a key's files are, how big they are, and how to remove them."""

    name = "abstract"

    @abstractmethod
    def path(self, key: str) -> Path:
        """The local folder of `key` (created by the caller)."""

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @staticmethod
    def check_key(key: str) -> str:
        # Keys are built by the portal, never typed by a user; still, nothing may escape the root.
        if not _KEY.match(key) or ".." in key:
            raise ValueError(f"bad backup key {key!r}")
        return key


class LocalFolderStorage(BackupStorage):
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / self.check_key(key)

    def size(self, key: str) -> int:
        total = 0
        for folder, _dirs, files in os.walk(self.path(key)):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    continue
        return total

    def delete(self, key: str) -> None:
        shutil.rmtree(self.path(key), ignore_errors=True)


def storage() -> BackupStorage:
    return LocalFolderStorage(Path(settings.BACKUP_ROOT))


def instance_prefix(instance) -> str:
    """The folder of one instance: its name (a slug) and id, so a re-used name never mixes."""
    return f"{instance.name.lower()}-{instance.pk}"

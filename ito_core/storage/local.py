"""A store in a local (or shared) directory: files written atomically, read in place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ito_core.storage.base import MANIFEST, checked_key, disk_full_error


def current_umask() -> int:
    """This process's umask, read without changing it (``os.umask`` can only be read by setting it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022  # no /proc: the common default


class LocalStore:
    def __init__(self, root: str | Path) -> None:
        self.root = str(Path(root).resolve())

    def _path(self, key: str) -> Path:
        return Path(self.root, checked_key(key))

    def url(self, key: str) -> str:
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_json(self, key: str) -> Any:
        return json.loads(self._path(key).read_text())

    def write_json(self, key: str, obj: Any) -> None:
        self.write_text(key, json.dumps(obj, indent=2, sort_keys=True))

    def write_text(self, key: str, text: str) -> None:
        """Readers see the old file or the whole new one, never a part (tmp in the same folder + rename)."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
                try:
                    os.chmod(tmp.name, 0o666 & ~current_umask())  # tempfile makes it 0600: teammates could not read
                    tmp.write(text)
                    tmp.flush()
                    os.fsync(tmp.fileno())
                    os.replace(tmp.name, path)
                finally:
                    Path(tmp.name).unlink(missing_ok=True)  # gone after a successful rename; cleans up a failed one
        except OSError as err:
            full = disk_full_error(err, path, what=key, fix="The old file (if any) is unchanged. Free space there, "
                                   "or point storage.root at a larger disk.")
            if full is None:
                raise
            raise full from err

    def upload_dir(self, local_dir: Path, key: str) -> None:
        if not Path(local_dir).is_dir():
            raise FileNotFoundError(f"upload_dir: {local_dir} is not a directory")
        target = self._path(key)
        if Path(local_dir).resolve() == target.resolve():
            return
        target.mkdir(parents=True, exist_ok=True)
        # New files and folders get the user's umask, not the source's mode (copytree would keep a temporary
        # folder's 0700 and tempfile's 0600, and teammates on a shared filesystem could not read the results).
        for source in sorted(Path(local_dir).rglob("*")):
            if source.is_file() and source.name != MANIFEST:
                dest = target / source.relative_to(local_dir)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)

    def download_dir(self, key: str, local_dir: Path, *, include: Callable[[str], bool] | None = None) -> Path:
        path = self._path(key)
        if not path.is_dir():
            raise FileNotFoundError(f"no artifact at {path}")
        return path  # already local: read in place (every file; ``include`` only saves transfers)

    def list_dirs(self, key: str) -> list[str]:
        path = self._path(key)
        return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []

    def delete_dir(self, key: str) -> None:
        shutil.rmtree(self._path(key), ignore_errors=True)

    def local_dir(self, key: str) -> Path | None:
        return self._path(key)


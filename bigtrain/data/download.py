"""Downloads with a SHA-256 check, written atomically so a partial file is never mistaken for data."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from bigtrain.errors import UserError


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: Path, sha256: str, *, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` unless a file with the right checksum is already there; verify, then rename."""
    dest = Path(dest)
    if dest.exists():
        if sha256_of(dest) == sha256:
            return dest
        raise UserError(f"{dest} exists but its SHA-256 is not {sha256}; delete it to download again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
        got = sha256_of(Path(tmp))
        if got != sha256:
            raise UserError(f"download of {url} has SHA-256 {got}, expected {sha256}; not using it")
        os.replace(tmp, dest)
    except OSError as err:
        raise UserError(f"cannot download {url} ({err}); put the file at {dest} by hand") from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest

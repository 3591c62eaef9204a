"""Download, verify and extract, written once for every data set that downloads (CIFAR-10/100,
Speech Commands): the archive is streamed to a temporary file renamed into place only when its
checksum matches, and extracted into a temporary folder moved into place whole, so an interrupted
or corrupted download never looks complete."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from ..errors import ReslearnError

__all__ = ["file_digest", "fetch", "extract_tar"]

_CHUNK = 1 << 20


def _hasher(algorithm: str):
    return hashlib.new(algorithm, usedforsecurity=False)  # an integrity check, not security


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """The hex digest of a file (``algorithm``: a ``hashlib`` name, e.g. md5 or sha256)."""
    h = _hasher(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: str | Path, *, digest: str | None, algorithm: str = "md5", progress: bool = True) -> None:
    """Stream ``url`` to ``dest`` via a temporary file in the same folder, renamed into place only
    when its ``algorithm`` digest equals ``digest`` (None: not checked)."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = _hasher(algorithm)
        # Looked up on the module at call time so tests can serve a local file offline.
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            headers = getattr(resp, "headers", None)
            total = int(headers.get("Content-Length") or 0) if headers is not None else 0
            with tqdm(total=total or None, unit="B", unit_scale=True, desc=dest.name,
                      disable=None if progress else True) as bar:  # None: off when not a terminal
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
        if digest is not None and h.hexdigest() != digest:
            raise ReslearnError(f"download of {url} is corrupt: {algorithm} {h.hexdigest()} != expected {digest} "
                                f"(checksum mismatch); try again")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:  # URLError is an OSError; a full disk too
        raise ReslearnError(f"could not download {url} ({e}); fetch it by hand into {dest.parent}") from e
    finally:
        tmp.unlink(missing_ok=True)


def _safe_extractall(tar: tarfile.TarFile, dest: Path, archive: Path) -> None:
    if hasattr(tarfile, "data_filter"):  # Python 3.12, 3.11.4+: refuses links/paths out of dest
        tar.extractall(dest, filter="data")
        return
    for m in tar.getmembers():  # pragma: no cover - older Pythons: the same refusal, by hand
        if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
            raise ReslearnError(f"{archive}: unsafe archive member {m.name!r}")
    tar.extractall(dest)


def extract_tar(archive: str | Path, dest: str | Path, *, inner: str | None = None,
                check: Callable[[Path], None] | None = None) -> Path:
    """Extract ``archive`` into a temporary folder beside ``dest``, then move its ``inner`` folder
    (None: the whole archive) to ``dest``, replacing an old one. ``check`` may raise on the
    extracted folder before it is moved. Returns ``dest``."""
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=dest.parent))
    try:
        with tarfile.open(archive) as tar:
            _safe_extractall(tar, tmp, archive)
        src = tmp / inner if inner else tmp
        if not src.is_dir():
            raise ReslearnError(f"{archive} does not contain {inner}/")
        if check is not None:
            check(src)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(src, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(src, dest)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ReslearnError(f"could not extract {archive}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest

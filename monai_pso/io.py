"""Files others read: written whole or not at all, read back with errors that name the file.

Every file that another command or process reads (an embedder, an index, a threshold, the release
ledger, a report) is written to a temporary name in its own folder and renamed into place, so a reader
sees the old file or the new one, never half of one. A folder of files is staged beside its target and
swapped in the same way (:func:`staged_folder`).

Examples
--------
>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "run" / "settings.json"
>>> write_json_atomically(path, {"tau": 1.5})
>>> read_json(path, what="settings")["tau"]
1.5
>>> read_json(path.with_name("other.json"), what="settings")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
monai_pso.errors.DataSourceError: .../run/other.json: settings not found
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from monai_pso.errors import DataSourceError, MonaiPsoError


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], None], *, fsync: bool = False) -> None:
    """Call ``write`` on a temporary file beside ``path`` (its folder created if needed), then rename it to ``path``.

    Parameters
    ----------
    path
        The file to write; an existing one is replaced only once the new content is complete.
    write
        Writes the content to the binary stream it is given.
    fsync
        Flush the content to disk before the rename (for files that must survive a crash, e.g. the ledger).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp makes 0600; keep the permissions open() would give
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            if fsync:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomically(path: str | Path, text: str, *, fsync: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`write_atomically`)."""
    write_atomically(path, lambda stream: stream.write(text.encode("utf-8")), fsync=fsync)


def write_json_atomically(path: str | Path, content: Any, *, fsync: bool = False, **dumps_options: Any) -> None:
    """Write ``content`` as JSON, ending in a newline, to ``path`` atomically (see :func:`write_atomically`).

    ``dumps_options`` go to :func:`json.dumps`; by default ``indent=2, sort_keys=True, allow_nan=False``
    (NaN is not JSON: pass ``allow_nan=True`` to write it anyway).
    """
    options = {"indent": 2, "sort_keys": True, "allow_nan": False, **dumps_options}
    write_text_atomically(path, json.dumps(content, **options) + "\n", fsync=fsync)


def read_json(path: str | Path, error_type: type[MonaiPsoError] = DataSourceError, what: str = "JSON file", missing: str | None = None) -> Any:
    """The parsed content of the JSON file ``path``.

    Parameters
    ----------
    path
        The file.
    error_type
        Raised, naming ``path`` (:meth:`~monai_pso.errors.MonaiPsoError.at`), when the file is missing or
        is not readable JSON.
    what
        What the file is, in the messages: ``"<path>: <what> not found"``, ``"<path>: cannot read <what> (<why>)"``.
    missing
        The problem reported for a missing file instead of ``"<what> not found"``.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error_type.at(path, missing or f"{what} not found") from None
    except (OSError, ValueError) as error:
        raise error_type.at(path, f"cannot read {what} ({error})") from None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def replace_folder(staged: Path, target: Path) -> None:
    """Rename ``staged`` to ``target``; an existing ``target`` is first renamed aside, then removed."""
    if not target.exists():
        os.replace(staged, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, retired / target.name)
    os.replace(staged, target)
    shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """A new empty folder beside ``target`` to fill; it replaces ``target`` when the block completes.

    When the block raises, the staged folder is removed and ``target`` is left as it was.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "report"
    >>> with staged_folder(target) as staged:
    ...     _ = (staged / "a.txt").write_text("a")
    >>> sorted(p.name for p in target.iterdir())
    ['a.txt']
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staged
        replace_folder(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` while the block runs (``fcntl.flock`` on ``.<name>.lock`` beside it).

    Whoever changes the files of a shared folder (the release ledger, an index rebuilt around it) takes it.
    The lock file lies beside the folder, not in it, so that it stays the same file when the folder itself
    is replaced (:func:`replace_folder`) while the lock is held.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()) / "index"
    >>> folder.mkdir()
    >>> with folder_lock(folder):
    ...     sorted(p.name for p in folder.parent.iterdir())
    ['.index.lock', 'index']
    """
    folder = Path(folder).absolute()
    with open(folder.parent / f".{folder.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """The bytes a ledger entry's or a sealed file's hash is computed over: sorted keys, no whitespace, UTF-8, no NaN.

    Examples
    --------
    >>> canonical_json({"b": 1, "a": [1.5, None]})
    b'{"a":[1.5,null],"b":1}'
    """
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

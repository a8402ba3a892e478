"""Output folders: checked before any work, held under an exclusive lock, never lost on failure.

Every command that writes a folder (``train``, ``eval``, ``experiment``, ``demo``) runs inside
:class:`OutputFolder`:

* the location is checked first (an existing file, a path below a file, an unwritable place are
  one-line errors before anything is computed);
* an exclusive ``flock`` on ``OUT/.ddcat.lock`` keeps a second process out; it is refused with a
  message naming the holder (pid, host, command). With ``torchrun`` only rank 0 takes it;
* on failure or Ctrl-C, a folder the command created is removed only if nothing below it is a
  training checkpoint (``last.pt`` / ``last.prev.pt``): half-written output goes, a resumable run
  never does. A folder that existed before is never removed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from ddcat.errors import DdcatError, show

LOCK_NAME = ".ddcat.lock"


def is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def check_writable_folder(path: Path, what: str = "--out") -> None:
    """A one-line error unless ``path`` is, or can be created as, a writable folder."""
    if path.exists() and not path.is_dir():
        raise DdcatError(f"{what} {path} exists and is not a folder")
    _check_parents(path, what)


def check_writable_file(path: Path, what: str) -> None:
    """A one-line error unless a file can be written at ``path`` (its folder created if needed)."""
    if path.is_dir():
        raise DdcatError(f"{what} {path} is a folder; give a file name, e.g. {path / 'model.pt'}")
    _check_parents(path.parent, what, shown=path)


def check_readable_file(path: Path, what: str) -> None:
    """A one-line error unless ``path`` is an existing file (not a folder): ``what`` names it."""
    if path.is_dir():
        raise DdcatError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise DdcatError(f"{what} not found: {path}")


def _check_parents(path: Path, what: str, shown: Path | None = None) -> None:
    """``path`` or its nearest existing ancestor must be a writable folder."""
    shown = shown or path
    target = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    if not target.is_dir():
        raise DdcatError(f"{what} {shown} lies below {target}, which is a file")
    if not os.access(target, os.W_OK | os.X_OK):
        raise DdcatError(f"{what} {shown}: {target} is not writable")


def os_reason(exc: BaseException) -> str:
    """The cause of a failed write in words: ``no space left on device`` for ENOSPC / EDQUOT."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device"
    if code == errno.EFBIG:
        return "file too large (file-size limit reached)"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def cannot_write(path: Path | str, exc: BaseException) -> DdcatError:
    """The one-line error of a failed write of ``path``: ``cannot write PATH: no space left on device``
    (the path is named even when the OSError carries no file name, as a full disk's write() does)."""
    return DdcatError(f"cannot write {path}: {os_reason(exc)}")


def write_text(path: Path | str, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file of this process and host renamed over it,
    so that processes writing the same file at once do not collide); a failure (a full disk, permissions) is
    a one-line :class:`DdcatError` naming ``path`` and the cause (:func:`cannot_write`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")  # shards on several hosts may share the folder
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise cannot_write(path, exc) from None


RUN_CHECKPOINTS = ("last.pt", "last.prev.pt")


def checkpoints_below(path: Path) -> list[Path]:
    """The training checkpoints in ``path`` and its subfolders (an experiment holds many runs)."""
    try:
        return [p for name in RUN_CHECKPOINTS for p in path.rglob(name) if p.is_file()]
    except OSError:
        return []


class OutputFolder:
    """Context manager for a command's output folder (see the module docstring)."""

    def __init__(self, path: str | Path, what: str = "--out", lock: bool = True) -> None:
        self.path = Path(path)
        self.what = what
        self.lock = lock and is_main_rank()
        self.existed = self.path.exists()
        self._fd: int | None = None

    def __enter__(self) -> "OutputFolder":
        check_writable_folder(self.path, self.what)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DdcatError(f"cannot create {self.what} {self.path}: {exc.strerror or exc}") from None
        if self.lock:
            try:
                self._acquire()
            except BaseException:
                self._cleanup()
                raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._release()
        if kind is not None:
            self._cleanup()

    # ------------------------------------------------------------------ lock
    def _acquire(self) -> None:
        lock = self.path / LOCK_NAME
        while True:
            created = False  # whether this call made the lock file (then only it may remove it on failure)
            try:
                try:
                    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                    created = True
                except FileExistsError:
                    fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue  # its holder removed it between the two opens: try again
            except OSError as exc:
                raise DdcatError(f"cannot lock {self.what} {self.path}: {os_reason(exc)} (creating {lock})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    if created:  # flock unsupported here (ENOLCK, EINVAL...): no lock file is left behind
                        _remove_lock(lock, fd)
                    else:
                        os.close(fd)
                    raise DdcatError(f"cannot lock {self.what} {self.path}: {os_reason(exc)} ({lock})") from None
                os.close(fd)
                raise DdcatError(f"{self.what} {self.path} is in use by another ddcat process ({holder(lock)}); wait for it or choose another folder") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file its previous holder unlinked while we opened it
                break
            os.close(fd)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv)}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(record) + "\n").encode())
        except OSError as exc:  # a full disk: no lock file is left behind, even in a folder that existed
            _remove_lock(lock, fd)
            raise DdcatError(f"cannot lock {self.what} {self.path}: {os_reason(exc)} (writing {lock})") from None
        self._fd = fd

    def _release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path / LOCK_NAME)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    # ------------------------------------------------------------------ cleanup
    def _cleanup(self) -> None:
        if not self.existed and self.path.is_dir() and not checkpoints_below(self.path):
            shutil.rmtree(self.path, ignore_errors=True)


def _remove_lock(lock: Path, fd: int) -> None:
    try:
        os.unlink(lock)
    except OSError:
        pass
    os.close(fd)


def holder(lock: Path) -> str:
    """Who holds a lock file, as recorded in it (bounded)."""
    try:
        record = json.loads(lock.read_text()[:4096] or "{}")
        return f"pid {record.get('pid')} on {show(record.get('host'))}: {show(record.get('command'))}"
    except (OSError, ValueError, AttributeError):
        return "unknown holder"

"""Atomic file writes: at every instant a file holds its previous complete version or its new one.

The pattern of databases and package managers: write a temporary file in the *target's own
directory* (a rename is atomic only within one filesystem), flush and fsync it, ``os.replace`` it
over the target, then fsync the directory so the rename itself survives a power cut. A crash or a
full disk in the middle leaves the old file untouched and at most a hidden temporary file
``.NAME.tmp-PID-XXXX``, which never ends in the target's suffix (so nothing mistakes it for a
checkpoint) and is removed by the next write into that directory (:func:`remove_stray_temps`), or by
the next run started in that tree of runs (:func:`sweep_run_tree`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from circuits_pl.errors import SaveFailed

_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def temp_prefix(target: str | os.PathLike) -> str:
    return f".{Path(target).name}.tmp-{os.getpid()}-"


def is_temp_file(path: str | os.PathLike) -> bool:
    """Is this a temporary file of an atomic write (finished, crashed or running)?"""
    return _TEMP.match(Path(path).name) is not None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[str]:
    """A temporary path beside ``path`` for a writer that takes a file name; on a clean exit it
    becomes ``path`` atomically. Every failure, from making the directory or the temporary file on
    (a read-only remount, a full disk), is one :class:`SaveFailed` naming ``path``; on any exception
    (a signal's too) the temporary file is removed and ``path`` keeps its previous content.

    ``durable=False`` skips the two fsyncs: the file is still complete after a kill, a signal or a full
    disk (the rename is atomic), but a power cut may lose the newest version. For files rewritten
    often whose loss costs little (metrics.csv: its validation rows are also in the checkpoint's
    history); the fsyncs are most of a small write's cost (``benchmarks/fault_injection.py --mode costs``)."""
    target = Path(path)
    directory = target.parent
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        remove_stray_temps(directory)
        tmp = _new_temp_file(directory, temp_prefix(target))
        yield tmp
        if durable:
            _fsync_file(tmp)  # the writer closed it: its data reaches the disk before the rename
        os.replace(tmp, target)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, SaveFailed):
            raise save_failed(target, err) from err
        raise
    if durable:
        fsync_dir(directory)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", durable: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit make it ``path`` atomically
    (:func:`atomic_path`: the previous content survives any failure or signal, reported as SaveFailed)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(path, durable) as tmp:
        with open(tmp, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as f:
            yield f


def save_failed(path: str | os.PathLike, err: BaseException) -> SaveFailed:
    """The one-line error for a write of ``path`` that failed (the previous version is intact)."""
    target = Path(path)
    code = getattr(err, "errno", None)
    reason = getattr(err, "strerror", None) or (str(err).strip().splitlines() or ["write failed"])[0][:160]
    message = f"could not write {target}: {reason}; its previous version (if any) is intact: every write is atomic"
    if code in (errno.ENOSPC, errno.EDQUOT):
        message += f". Free space on that disk (df -h {target.parent}), then run again or resume from last.ckpt"
    elif code == errno.EROFS:
        message += ". The file system turned read-only (mount; dmesg): resume from the run's last.ckpt once it is " \
                   "writable again, or from a copy of the run on a writable disk"
    return SaveFailed(message, code)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see the module docstring and :func:`atomic_path`)."""
    with atomic_open(path, "w", durable) as f:
        f.write(text)


def atomic_link(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make ``path`` a hard link to the complete file ``source``, atomically (link to a temporary
    name beside ``path``, then ``os.replace``). ``path`` then keeps that content even when ``source``
    is later replaced or removed. Raises OSError where hard links are not possible (the caller
    writes a copy instead)."""
    target = Path(path)
    directory = target.parent
    remove_stray_temps(directory)
    tmp = directory / (temp_prefix(target) + os.urandom(4).hex())
    os.link(source, tmp)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def remove_stray_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove temporary files left in ``directory`` by crashed writes (their process is gone).

    Temporary files of a live process (a write in progress) are left alone. Returns what was removed.
    """
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def sweep_run_tree(root: str | os.PathLike) -> list[Path]:
    """:func:`remove_stray_temps` over a tree of runs: ``root`` (``save_dir/lightning_logs``), each
    ``version_*`` in it and the directories inside those (``checkpoints/``). A write killed in a run
    (its first save, the config.yaml rename) is never followed by another write into that directory,
    so the next start in the tree sweeps it. Runs are not descended further (a tree of thousands of runs
    costs one directory listing each)."""
    removed = remove_stray_temps(root)
    try:
        runs = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return removed
    for run in runs:
        removed += remove_stray_temps(run.path)
        with contextlib.suppress(OSError):
            for sub in os.scandir(run.path):
                if sub.is_dir(follow_symlinks=False):
                    removed += remove_stray_temps(sub.path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _new_temp_file(directory: Path, prefix: str) -> str:
    """Create an empty file ``directory/prefix + random`` that did not exist, with the mode a plain
    ``open(path, "w")`` gives (0666 less the process's umask, applied by the kernel: the umask is never
    read, so no ``os.umask`` round trip briefly sets it to 0 for every thread). ``tempfile.mkstemp``
    would make it 0600."""
    for _ in range(100):
        path = os.path.join(directory, prefix + os.urandom(6).hex())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(errno.EEXIST, f"no free temporary name in {directory}", prefix)

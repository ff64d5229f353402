"""Replace a whole directory atomically: write a sibling temporary directory, then swap.

A reader of the target directory sees either its previous content or the new content,
never a mix, even if the writer is killed part-way:

1. the new content is written into a sibling ``.<name>.<host>.<pid>.<random>.saving``;
2. files of the old directory that the writer did not produce are hard-linked (copied
   where links are impossible) into it, so unrelated files survive the swap;
3. ``<name>`` is renamed to ``.<name>.backup``, the temporary directory to ``<name>``,
   and the backup is removed.

A crash between the two renames leaves only the backup; `recover_directory` (called
before every read and every new write) renames it back. A crash after them leaves a
stale backup beside a complete directory; it is removed. Temporary directories of
writers that died (same host, process gone) are removed by the next write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["atomic_directory", "recover_directory", "backup_path"]

_SUFFIX = ".saving"


def backup_path(path: str | os.PathLike) -> Path:
    """Where the previous content of ``path`` waits during a swap: ``.<name>.backup``.

    Example:
        >>> backup_path("/a/model").as_posix()
        '/a/.model.backup'
    """
    path = Path(path)
    return path.parent / f".{path.name}.backup"


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``.<name>.<host>.<pid>.*.saving`` directories of dead writers on this host."""
    prefix = f".{path.name}.{_host()}."
    if not path.parent.is_dir():
        return
    for entry in path.parent.iterdir():
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(_SUFFIX) and entry.is_dir()):
            continue
        pid_text = name[len(prefix):].split(".", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)


def recover_directory(path: str | os.PathLike, complete: Callable[[Path], bool] | None = None) -> bool:
    """Finish or undo a swap that a killed writer left half-done; True if ``path`` was restored.

    If ``path`` is missing and its backup is complete (``complete(backup)``, default: it
    is a directory), the backup is renamed back to ``path``. If ``path`` exists, a
    leftover backup is removed. Temporary directories of dead writers are removed too.
    Errors from a read-only location are ignored.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "m"
        >>> backup_path(d).mkdir(); _ = (backup_path(d) / "a.txt").write_text("old")
        >>> recover_directory(d), (d / "a.txt").read_text(), backup_path(d).exists()
        (True, 'old', False)
    """
    path = Path(path)
    with contextlib.suppress(OSError):
        _remove_stale_temporaries(path)
    backup = backup_path(path)
    if not backup.is_dir():
        return False
    with contextlib.suppress(OSError):
        if not path.exists():
            if complete is None or complete(backup):
                os.rename(backup, path)
                return True
        elif path.is_dir():
            shutil.rmtree(backup, ignore_errors=True)
    return False


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry_over(old: Path, new: Path) -> None:
    """Hard-link (or copy) the entries of ``old`` that ``new`` does not have into ``new``."""
    for entry in old.iterdir():
        target = new / entry.name
        if target.exists() or target.is_symlink():
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), target)
        elif entry.is_dir():
            shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(target))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, keep_other_files: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path``.

    On an exception nothing of ``path`` changes and the temporary directory is removed.
    With ``keep_other_files``, entries of the old ``path`` that the new content does not
    contain are carried over (hard links, so it is cheap).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "m"
        >>> with atomic_directory(d) as tmp:
        ...     _ = (tmp / "a.txt").write_text("new")
        >>> sorted(p.name for p in d.parent.iterdir()), (d / "a.txt").read_text()
        (['m'], 'new')
    """
    path = Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory; expected a directory (or nothing) there")
    if path == Path(path.anchor) or Path.cwd() == path or path in Path.cwd().parents:
        raise ValueError(f"cannot replace {path} atomically: it is the current working directory or one of its "
                         "parents; save into a subdirectory instead")
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=_SUFFIX, dir=path.parent))
    backup = backup_path(path)
    moved = False
    try:
        yield tmp
        if path.is_dir():
            if keep_other_files:
                _carry_over(path, tmp)
            shutil.copymode(path, tmp)
            os.rename(path, backup)
            moved = True
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the usual directory mode
        os.rename(tmp, path)
    except BaseException:
        if moved and not path.exists():
            with contextlib.suppress(OSError):
                os.rename(backup, path)  # put the old content back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if moved:
        shutil.rmtree(backup, ignore_errors=True)

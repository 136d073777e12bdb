"""Private files: whose the data directory is, who may write it, and files made 0600.

Like OpenSSH's StrictModes and tmux's socket directory: the data directory must belong
to the user running aime-tui and be writable by nobody else, or it is refused with one
line saying what is wrong and how to fix it. It is created 0700, every file aime-tui
keeps in it is 0600, and wider modes found there are tightened (and said). Nothing here
follows a symlink.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# The names aime-tui keeps in a data directory (a prefix match: rotations, -wal, -shm,
# files moved aside); backups/ is checked file by file.
OWN_PREFIXES = ("aime.db", "aime.log", "aime.lock", "aime.sock")
BACKUP_DIR = "backups"


class UnsafeDataDir(Exception):
    """A data directory or a file in it that aime-tui must not use; the message says why and the fix."""


def owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _me() -> str:
    return owner_name(os.geteuid())


def ensure_private_dir(directory: Path, *, create: bool = True) -> None:
    """Create `directory` 0700 if missing (when `create`), then refuse it if it is not safe.

    Safe: a directory (not a file), owned by this user, writable by no group or other,
    with no file of ours in it that belongs to someone else.
    """
    if create and not os.path.lexists(directory):
        try:
            directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        except OSError as exc:
            raise UnsafeDataDir(
                f"data directory {directory} cannot be created: {exc.strerror or exc}"
                " — fix: create it yourself (mkdir -m 700), or choose another with --data-dir"
            ) from None
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        if not create:
            return
        raise
    except OSError as exc:
        raise UnsafeDataDir(
            f"data directory {directory} cannot be read: {exc.strerror or exc}"
            " — fix: choose a directory of your own with --data-dir"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDataDir(
            f"data directory {directory} is not a directory — fix: move it away, or choose another with --data-dir"
        )
    if info.st_uid != os.geteuid():
        raise UnsafeDataDir(
            f"data directory {directory} belongs to {owner_name(info.st_uid)}, not to you ({_me()})"
            f" — fix: use a directory of your own (--data-dir), or have it chowned to you"
        )
    if info.st_mode & 0o022:
        who = " and ".join(w for w, bit in (("its group", 0o020), ("other users", 0o002)) if info.st_mode & bit)
        raise UnsafeDataDir(
            f"data directory {directory} is writable by {who} (mode {stat.S_IMODE(info.st_mode):04o})"
            f" — fix: chmod 700 {directory}"
        )
    for path in own_files(directory):
        try:
            entry = os.lstat(path)
        except FileNotFoundError:
            continue
        if entry.st_uid != os.geteuid():
            raise UnsafeDataDir(
                f"{path} belongs to {owner_name(entry.st_uid)}, not to you ({_me()})"
                f" — fix: remove it or have it chowned to you; aime-tui never uses another user's files"
            )


def own_files(directory: Path) -> list[Path]:
    """The files of ours in `directory` (and its backups/), symlinks included, sorted."""
    found: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        if name.startswith(OWN_PREFIXES):
            found.append(directory / name)
    backups = directory / BACKUP_DIR
    if os.path.isdir(backups) and not os.path.islink(backups):
        found.append(backups)
        try:
            found.extend(backups / name for name in os.listdir(backups))
        except OSError:
            pass
    return sorted(found)


def tighten(directory: Path) -> list[str]:
    """Narrow wider modes to 0700 (directories) and 0600 (files); returns what was changed.

    Symlinks are left alone: chmod would follow one to a file that is not ours.
    """
    changed = []
    for path in (directory, *own_files(directory)):
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
            continue
        wanted = PRIVATE_DIR if stat.S_ISDIR(info.st_mode) else PRIVATE_FILE
        mode = stat.S_IMODE(info.st_mode)
        if mode & ~wanted & 0o777:
            try:
                os.chmod(path, mode & wanted)
            except OSError:
                continue
            changed.append(f"{path} {mode:04o} → {mode & wanted:04o}")
    return changed


def create_private(path: Path) -> None:
    """Make sure `path` exists as a regular file of mode 0600 (never through a symlink).

    SQLite creates a database's -wal and -shm with the database file's mode, and VACUUM
    INTO writes into an empty file: creating the file first is what makes those private.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        make_private(fd)
    finally:
        os.close(fd)


def make_private(fd: int) -> None:
    """Narrow an open file of ours to 0600 whatever the umask was when it was made."""
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & ~PRIVATE_FILE:
        os.fchmod(fd, PRIVATE_FILE)

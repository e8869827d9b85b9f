"""Private, content-addressed copies of revocation files: the bytes the engine serves.

The engine never maps the configured files themselves.  A file written in place
(``cp``, ``rsync --inplace``, ``install``, configuration management) would change the
pages under the mapping: revoked cards would read as good, or a truncation would kill
every process mapping it with SIGBUS.  Instead each file is copied once into a
directory that only the engine writes, named by a digest of its header (which holds
the sizes, hash seed, sequence and the payload's checksum), and that copy is what is
validated and mapped.  Whatever happens to the configured file afterwards, the data in
service stays the data as loaded until a reload validates the new file.

The copies live on tmpfs (``/dev/shm``) by default, so every engine process on the host
that loads the same file maps the same copy: one page-cache copy per host.  A copy is
never changed once renamed into place; old copies are unlinked when no longer in
service here (a process still mapping one keeps its pages: unlinking frees nothing
under a mapping).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import struct
import tempfile
import time
from collections.abc import Iterator

from engine import _core
from engine.revocation.format import CRC_OFFSET, HEADER_SIZE, RevocationFileError, parse_header

SUFFIX = ".essc"
PRUNE_AFTER_S = 60.0  # copies not in service here, untouched this long, are removed
_CHUNK = 1 << 26  # sendfile's bytes a call
_READ_CHUNK = 1 << 22  # read through one reused buffer: stays in cache, no page faults


def default_directory() -> str:
    """``/dev/shm/essc-engine-<uid>`` where tmpfs is writable, else under the temp dir."""
    base = "/dev/shm"
    if not (os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK)):
        base = tempfile.gettempdir()
    return os.path.join(base, f"essc-engine-{os.getuid()}")


def ensure_directory(directory: str) -> str:
    """Creates the directory (mode 0700) or checks that it is private to this user."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
    except OSError as e:
        raise RevocationFileError(
            f"{directory}: cannot create the private copy directory: {e.strerror}"
        ) from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RevocationFileError(
            f"{directory}: the private copy directory must be a directory (not a link) owned "
            f"by uid {os.getuid()} with mode 0700; it is mode {stat.filemode(st.st_mode)}, "
            f"uid {st.st_uid}"
        )
    return directory


def private_copy(path: str, directory: str) -> tuple[str, bool]:
    """The private copy of the file now at ``path``: (its path, whether it was reused).

    Checks the header first (so a file that cannot be a revocation file is refused
    without copying anything).  A new copy is made by the kernel (sendfile); the caller
    validates it (checksum and contents) before using it, so the bytes checked are
    exactly the bytes served, and a damaged source fails there.  Before an existing copy
    is reused, the source's own checksum is checked, so a damaged file is refused even
    when a copy of the good one exists.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise RevocationFileError(f"{path}: cannot open: {e.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER_SIZE, 0)
        header = parse_header(path, head, size)
        digest = hashlib.sha256(head).hexdigest()[:32]
        target = os.path.join(directory, f"{header.kind}-{header.sequence}-{digest}{SUFFIX}")
        if _reusable(target, size):
            _check_source(fd, path, head, size)
            with contextlib.suppress(OSError):
                os.utime(target)  # in service again: not for pruning
            return target, True
        _copy(fd, path, head, size, target)
        if hasattr(os, "posix_fadvise"):  # the source's pages are not needed any more
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return target, False
    finally:
        os.close(fd)


def discard(copy_path: str) -> None:
    """Removes a copy that failed validation, so the next load copies afresh."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(copy_path)


def prune(directory: str, in_service: set[str], *, older_than_s: float = PRUNE_AFTER_S) -> int:
    """Unlinks copies (and abandoned temporary files) other than ``in_service`` that
    nobody has loaded for ``older_than_s``; returns how many."""
    removed = 0
    cutoff = time.time() - older_than_s
    keep = {os.path.basename(p) for p in in_service}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if entry.name in keep or not (entry.name.endswith(SUFFIX) or entry.name.endswith(".tmp")):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue  # another process pruned it first
    return removed


def _reusable(target: str, size: int) -> bool:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_uid == os.getuid()
        and st.st_size == size
        and not st.st_mode & 0o222
    )


def _copy(fd: int, path: str, head: bytes, size: int, target: str) -> None:
    """Copies the file to a temporary file, then renames it to ``target`` (a reader sees
    no copy or a whole one; two processes copying the same file race harmlessly)."""
    directory = os.path.dirname(target)
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            done = _copy_range(fd, out, size)
        except OSError as e:
            raise RevocationFileError(f"{path}: cannot copy to {directory}: {e.strerror}") from None
        if done != size or os.pread(fd, HEADER_SIZE, 0) != head:
            raise RevocationFileError(
                f"{path}: changed while being copied ({done} of {size} bytes); not loaded"
            )
        os.fchmod(out, 0o400)  # never written again
    except BaseException:
        os.close(out)
        discard(tmp)
        raise
    os.close(out)
    os.rename(tmp, target)


def _copy_range(src: int, dst: int, size: int) -> int:
    """Bytes copied (fewer than ``size`` when the source got shorter meanwhile)."""
    done = 0
    try:
        while done < size:
            n = os.sendfile(dst, src, done, min(_CHUNK, size - done))
            if n == 0:
                return done
            done += n
        return done
    except OSError as e:
        if done or e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    for chunk in _chunks(src, 0, size):  # no sendfile between these file systems
        _write_all(dst, chunk)
        done += len(chunk)
    return done


def _chunks(fd: int, start: int, size: int) -> Iterator[memoryview]:
    """The bytes [start, size) of fd, read with pread into one reused buffer (views of
    it, valid until the next one); stops early where the file got shorter.  pread, not
    a mapping: a file truncated meanwhile gives a short read, never SIGBUS."""
    buf = memoryview(bytearray(_READ_CHUNK))
    pos = start
    while pos < size:
        n = os.preadv(fd, [buf[: min(_READ_CHUNK, size - pos)]], pos)
        if n == 0:
            return
        yield buf[:n]
        pos += n


def _check_source(fd: int, path: str, head: bytes, size: int) -> None:
    """The source's whole-file CRC32C, checked against its header."""
    crc = _core.crc32c(head[:CRC_OFFSET])
    pos = len(head)
    try:
        for chunk in _chunks(fd, pos, size):
            crc = _core.crc32c(chunk, crc)
            pos += len(chunk)
    except OSError as e:
        raise RevocationFileError(f"{path}: cannot read: {e.strerror}") from None
    if pos != size:
        raise RevocationFileError(
            f"{path}: changed while being read ({pos} of {size} bytes); not loaded"
        )
    if crc != struct.unpack_from("<I", head, CRC_OFFSET + 4)[0]:
        raise RevocationFileError(f"{path}: checksum mismatch (the payload is corrupt)")


def _write_all(fd: int, data: memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]

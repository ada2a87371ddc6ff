"""Saving files so that a failed save loses nothing."""

from __future__ import annotations

import errno
import os
import stat
import uuid
from typing import Callable, Union

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def write_atomically(path: PathLike, write: Callable[[str], None]) -> None:
    """Calls ``write(tmp)`` to write a new file next to ``path``, then renames it over ``path``:
    if the write fails or is interrupted (a full disk, a file size limit, Ctrl-C), the file that
    was at ``path`` stays as it was and the temporary file is removed.

    A link is followed (the file it points to is replaced, the link kept), and a path that is
    neither a file nor missing (``/dev/null``, a FIFO) is written in place: renaming over it would
    replace the device with a file. The new file gets the usual permissions (0o666 less the
    umask), as ``open(path, "w")`` gives.
    """
    p = os.path.realpath(os.fsdecode(path))
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise type(e)(e.errno, e.strerror, os.fsdecode(path)) from None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fsdecode(path))
    if mode is not None and not stat.S_ISREG(mode):
        write(p)
        return
    directory, name = os.path.split(p)
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as e:
        # What cannot be written is reported for the path the caller gave.
        raise type(e)(e.errno, e.strerror, os.fsdecode(path)) from None
    try:
        write(tmp)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

"""Files written all at once: a reader sees the old file or the complete new one, never a partial one.

`atomic_write(path)` yields a handle to a temporary sibling of `path` (same folder, so the final rename
never degrades to a copy across filesystems); when the block ends without an error the file is flushed,
synced to disk and renamed over `path`; on any error (a full disk, Ctrl-C) it is removed and `path` is left
as it was. Temporary names carry the writer's host and process id (`temporary_glob`), so the leftovers of a
writer that was killed outright can be found and removed by whoever watched it die, and never those of a
process with the same id on another machine sharing the folder (prepare.py's shards on a cluster).
"""

from __future__ import annotations

import contextlib
import glob
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_HOST = socket.gethostname()


def temporary_glob(pid: int) -> str:
    """The glob pattern of the temporary files process `pid` of this host is (or was) writing, in one folder."""
    return f".*.{glob.escape(_HOST)}-{pid}.*.tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_args) -> Iterator[IO]:
    """A handle (`open(tmp, mode, **open_args)`) to a temporary sibling that replaces `path` when the block
    succeeds and is removed when it fails. The folder must exist."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{_HOST}-{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, mode, **open_args) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # the write's own error, if any, is the one to report
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """`path` replaced by `text` all at once (see `atomic_write`)."""
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)

"""The cache's own errors: problems of the cache folder or of an entry, never of a video."""

from __future__ import annotations

from src.utils.errors import UserError


class CacheError(UserError, ValueError):
    """A problem of the cache itself, not of a video: runs end on its one-line message."""


class CacheWriteError(CacheError):
    """The cache folder cannot take an entry (disk full, read-only, no permission): the build stops."""


class CacheEntryError(CacheError):
    """A cache entry that a run pinned no longer reads back; the message names the video and the file."""

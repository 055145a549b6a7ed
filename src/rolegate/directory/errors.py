"""Directory errors: the directory cannot be reached or answered something unusable."""

from __future__ import annotations

from rolegate.errors import ServiceUnavailable


class DirectoryUnavailable(ServiceUnavailable):
    """The directory could not be reached, refused the bind, or failed during a read."""

    code = "directory_unavailable"
    public_message = "The company directory cannot be reached right now."


class SyncRefused(ServiceUnavailable):
    """The sync would remove or disable more users than ``max_deletions`` allows."""

    code = "directory_sync_refused"
    public_message = "The directory sync was refused by its safety threshold."

"""Directory sync: users and groups from LDAP and Active Directory, nested groups resolved.

The master process runs ``DirectorySync``; workers read the applied snapshot with
``load_snapshot``; sign-in re-reads one user live with ``lookup_user``.
"""

from rolegate.directory.builder import RawGroup, RawUser, apply_changes, build_snapshot
from rolegate.directory.diff import GroupChange, RolesHook, SyncDiff, UserChange, diff
from rolegate.directory.errors import DirectoryUnavailable, SyncRefused
from rolegate.directory.lookup import lookup_user
from rolegate.directory.model import DirectoryGroup, DirectorySnapshot, DirectoryUser
from rolegate.directory.persist import COUNTER, NAMESPACE, SNAPSHOT_KEY, load_snapshot, save_snapshot
from rolegate.directory.safety import DeletionCheck, check_deletions
from rolegate.directory.service import DirectorySync
from rolegate.directory.status import SyncResult, SyncStatus

__all__ = [
    "COUNTER",
    "NAMESPACE",
    "SNAPSHOT_KEY",
    "DeletionCheck",
    "DirectoryGroup",
    "DirectorySnapshot",
    "DirectorySync",
    "DirectoryUnavailable",
    "DirectoryUser",
    "GroupChange",
    "RawGroup",
    "RawUser",
    "RolesHook",
    "SyncDiff",
    "SyncRefused",
    "SyncResult",
    "SyncStatus",
    "UserChange",
    "apply_changes",
    "build_snapshot",
    "check_deletions",
    "diff",
    "load_snapshot",
    "lookup_user",
    "save_snapshot",
]

"""Limits shared by more than one module, defined once.

Only constants, no imports: any package may import this without joining an import cycle.
"""

from __future__ import annotations

from typing import Final

# A cache keyed by a Cookie (or Authorization) header keeps a header up to this length as it is; a longer
# one is parsed every time, or kept as a digest: a client sending 16 KiB headers cannot make 10,000
# remembered entries cost 160 MiB.
COOKIE_KEY_LENGTH: Final = 2048

# -- how many entries each cache holds (memo.BoundedCache: emptied when full) ---------------------------------
# Each is an upper bound on memory a client choosing keys can make rolegate keep, sized above what one
# instance's working set of live users, sessions and credentials needs so that a full cache is rare.

# Access memo (server/access.py): credential/route answers, upstream headers, public routes' Cookie headers.
ACCESS_MEMO: Final = 10_000
# Sessions (identity/sessions.py): (subject tag, id) -> store key, and store key -> loaded session.
SESSIONS: Final = 10_000
# Raw Cookie header -> the session cookie's value (identity/stage.py): one per browser, parsing is per request.
COOKIE_VALUES: Final = 4096
# Sealed cookies already decrypted (identity/sealed_cookie.py): one per live browser session or pass.
SEALED_OPENED: Final = 10_000
# Raw Cookie header -> a session with nothing to write back (identity/authenticator_cookie_session.py).
QUIET_COOKIES: Final = 10_000
# (pass, session) -> loaded day-pass session and record (identity/daypass/service.py).
DAYPASS_SESSIONS: Final = 10_000
# (pass, scope) -> the pages a pass opens, shown on its every 403 (identity/daypass/endpoints.py): few passes.
PASS_LINKS: Final = 1000
# (policy, people, permission, scope) -> who may grant it, for 403 pages (admin/requests.py): few permissions.
APPROVERS: Final = 512
# (user[, groups]) -> the authz Identity (server/runtime.py): one per user of the directory, which can be large.
IDENTITIES: Final = 50_000
# User number -> the decoded user of a mapped directory snapshot (directory/mapped.py), and closure number ->
# its group names: the users one worker serves, decoded once per snapshot version.
MAPPED_USERS: Final = 50_000
# User -> a live directory lookup of a user the snapshot lacks (server/runtime.py): new hires, briefly.
LIVE_USERS: Final = 10_000
# Forward-auth subrequest head -> its parse (server/lean_auth.py): one per (credential, target) a proxy asks.
FORWARD_AUTH_HEADS: Final = 2048
# (permission, allowed) -> the reasons behind a decision, per policy entry (authz/policy.py): few permissions.
ENTRY_REASONS: Final = 256
# Host header -> its match key (proxy/routes.py, with host routes only): one per name clients use for us.
ROUTE_HOSTS: Final = 1024
# Pass id -> its record, re-read after any pass change (tokens/subject.py): one per pass holding tokens.
PASS_RECORDS: Final = 10_000

__all__ = [
    "ACCESS_MEMO",
    "APPROVERS",
    "COOKIE_KEY_LENGTH",
    "COOKIE_VALUES",
    "DAYPASS_SESSIONS",
    "ENTRY_REASONS",
    "FORWARD_AUTH_HEADS",
    "IDENTITIES",
    "LIVE_USERS",
    "PASS_LINKS",
    "PASS_RECORDS",
    "QUIET_COOKIES",
    "ROUTE_HOSTS",
    "SEALED_OPENED",
    "SESSIONS",
]

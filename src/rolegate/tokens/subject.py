"""Who a token family stands for, checked again at every grant the way a request checks its caller.

A refresh token is only as good as the sign-in behind it. Every grant (session exchange, day-pass
redemption, refresh) asks the same questions a request with the original credential would be asked,
with the same code:

- a day pass: its stored record's status (``PassRecord.status``, what the pass cookie's check reads):
  revoked, expired or gone ends it. ``PassCheck``, also asked by every bearer request of a pass's token;
- a browser session's family: the session must still be alive (``SessionStore.find_for``: signed
  out, revoked, expired or idle ends it); a refresh counts as activity of the session, like a request;
- a user: the authz identity the request path builds (``Runtime.identity_for``): disabled in the
  directory, or unknown to it, ends it.

``subject_check(runtime)`` is the Runtime's answer for the last two (``TokenService(reload_identity=)``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rolegate.identity.principal import Principal
from rolegate.limits import PASS_RECORDS
from rolegate.memo import BoundedCache
from rolegate.store import Store
from rolegate.store.version_board import VersionBoard

if TYPE_CHECKING:
    from rolegate.identity.daypass.record import PassRecord

log = logging.getLogger("rolegate.tokens")


class PassCheck:
    """``await in_force(pass_id)``: whether a day pass still works now (neither revoked, expired nor gone).

    The record is read through ``load_pass`` and judged by ``PassRecord.status``, exactly as the pass
    cookie's check does. Records are remembered per worker while the version board's ``daypass``
    counter stands still (every issue and revocation, on any instance, moves it); the status itself
    is worked out against the clock at every call, so an expiry bites on time without a reload.
    """

    __slots__ = ("store", "board", "_clock", "_records", "_version")

    def __init__(self, store: Store, *, board: VersionBoard | None, clock: Callable[[], float]) -> None:
        self.store = store
        self.board = board
        self._clock = clock
        self._records: BoundedCache[str, PassRecord | None] = BoundedCache(PASS_RECORDS)
        self._version = -2

    async def in_force(self, pass_id: str) -> bool:
        from rolegate.identity.daypass.record import load_pass  # day passes: loaded only when used

        board = self.board
        if board is not None:
            version = board.get("daypass")
            if version != self._version:
                self._records.clear()
                self._version = version
        if pass_id in self._records:
            record = self._records[pass_id]
        else:
            found = await load_pass(self.store, pass_id)
            record = found[0] if found is not None else None
            if board is not None:  # without a board nothing says when to forget: read every time
                self._records.put(pass_id, record)
        return record is not None and record.status(self._clock()) == "active"


def subject_check(runtime: Any) -> Callable[[Principal], Any]:
    """The Runtime's re-check of a (non-day-pass) token subject: the live session it came from, and
    the directory's verdict; the fresh Principal, or None when the subject may have no more tokens.

    Reads ``runtime.identity`` and ``runtime.identity_for`` at call time, so a test that swaps the
    Runtime's pieces is honoured. Store or directory outages raise (the grant fails, the family lives).
    """

    async def check(principal: Principal) -> Principal | None:
        if getattr(principal, "daypass_id", None) is not None:
            return principal  # the pass itself: PassCheck, in the TokenService
        if principal.auth == "session":
            stage = runtime.identity
            if stage is None or stage.config.session is None:
                return None
            await stage.open()
            session = await stage.sessions.find_for(principal)
            if session is None:
                log.info("token subject %s: the session it came from has ended", principal.username)
                return None
            principal = session.principal  # its current name, e-mail and groups
        identity = await runtime.identity_for(principal)
        if identity.disabled:
            log.info("token subject %s: disabled or unknown in the directory", principal.username)
            return None
        return principal

    return check

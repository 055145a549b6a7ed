"""Everything one worker needs to answer requests, built from one config and swapped whole on reload.

The Runtime owns the worker's Store connection, its view of the version board, the audit log and
the stages (identity, tokens). The compiled policy is refreshed lazily: before each request the
board's counters are compared with the versions the policy was built from (a memory read), and a
change anywhere (admin API, day pass, directory sync, another instance) recompiles it once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rolegate.audit import AuditLog
from rolegate.authz import Identity, Policy, compile_policy, effective_permissions, roles_of
from rolegate.server.object_lookup import ObjectLookups
from rolegate.server.policy_state import compile_live_policy
from rolegate.config import Config
from rolegate.config.sections.routing import RedactConfig
from rolegate.errors import ConfigError, ServiceUnavailable
from rolegate.identity.principal import Principal
from rolegate.identity.stage import IdentityStage
from rolegate.limits import APPROVERS, IDENTITIES, LIVE_USERS
from rolegate.memo import BoundedCache
from rolegate.proxy.forward import Forwarder
from rolegate.proxy.redact import RedactionFilter, compile_redaction
from rolegate.proxy.route_table import compile_routes_strict
from rolegate.proxy.routes import RouteTable
from rolegate.proxy.upstream_pool import Upstream
from rolegate.store import Store, StoreUnavailable, open_store
from rolegate.store.version_board import VersionBoard, board_path_for
from rolegate.tokens import TokenStage
from rolegate.tokens.subject import subject_check

if TYPE_CHECKING:
    from rolegate.directory import DirectoryUser  # at run time only with a directory: ldap3
    from rolegate.directory.model import SnapshotView
    from rolegate.server.access import AccessMemo  # access imports this module
    from rolegate.admin.approvers import Approver  # admin is above server: its types only
    from rolegate.admin.people import People

log = logging.getLogger("rolegate.runtime")

# Counters whose movement means "recompile the policy".
POLICY_COUNTERS = ("policy", "directory", "daypass")
# How often a worker asks the Store for counters another process or instance may have moved.
STORE_POLL_SECONDS = 0.5
# How long a live directory lookup of a user missing from the snapshot is trusted.
LIVE_LOOKUP_SECONDS = 30.0


class Compiled:
    """The parts of a config that compile without I/O; what the master validates before a reload."""

    __slots__ = ("routes", "upstreams", "redactors")

    def __init__(self, config: Config) -> None:
        self.routes: RouteTable = compile_routes_strict(config)
        problems: list[str] = []
        self.upstreams: dict[str, Upstream] = {}
        for name, up in config.upstreams.items():
            try:
                self.upstreams[name] = Upstream(
                    name,
                    up.url,
                    connect_timeout=up.connect_timeout.total_seconds(),
                    read_timeout=up.timeout.total_seconds(),
                    pool_size=up.pool_size,
                    ca_file=up.ca_file,
                )
            except ValueError as exc:
                source = getattr(config, "source", None)
                where = source.where(("upstreams", name)) if source is not None else f"upstreams.{name}"
                problems.append(f"{where}: {exc}")
        self.redactors: dict[int, RedactionFilter] = {}
        for route in self.routes.routes:
            # Route.redact is typed ``object`` (proxy sits below config): it holds the route's RedactConfig.
            redact = cast("RedactConfig | None", route.redact)
            if redact is not None:
                try:
                    self.redactors[route.index] = RedactionFilter(
                        compile_redaction(redact.fields), redact.max_bytes, redact.on_unredactable, route.label
                    )
                except ConfigError as exc:
                    problems.extend(f"{route.label}: redact: {p}" for p in exc.problems)
        if config.daypass is not None:  # a landing the pass could not open would strand its holder on a 403
            from rolegate.identity.daypass.landing import landing_problems  # day passes: loaded only when used

            problems.extend(landing_problems(config, self.routes))
        if problems:
            raise ConfigError(problems)


# A remembered access answer is re-checked from scratch at least this often (see Runtime.epoch).
EPOCH_SECONDS = 1.0


class Runtime:
    """The compiled view of a config for the request path, plus the worker's live resources."""

    __slots__ = (
        "config",
        "base_dir",
        "routes",
        "forwarder",
        "redactors",
        "generation",
        "max_header_size",
        "identity",
        "tokens",
        "store",
        "board",
        "audit",
        "policy",
        "directory",
        "directory_builds",
        "snapshot_dir",
        "_private_snapshot_dir",
        "_seen",
        "_refresh_lock",
        "_identities",
        "_live_users",
        "approvers",
        "people",
        "_poller",
        "clock",
        "_closed",
        "store_ok_at",
        "max_staleness",
        "_epoch",
        "_epoch_board",
        "_epoch_until",
        "access_memo",
        "object_lookup",
    )

    def __init__(
        self,
        config: Config,
        compiled: Compiled,
        *,
        generation: int = 1,
        base_dir: Path | None = None,
        store: Store | None = None,
        board: VersionBoard | None = None,
        identity: IdentityStage | None = None,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
        snapshot_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.base_dir = base_dir
        self.routes = compiled.routes
        self.redactors = compiled.redactors
        self.forwarder = Forwarder(
            compiled.upstreams,
            max_body=config.server.max_body,
            trusted_proxies=config.server.trusted_proxies,
            drop_underscore_headers=config.server.drop_underscore_headers,
        )
        self.generation = generation
        self.max_header_size = config.server.max_header_size
        self.store = store
        self.board = board
        self.identity = identity
        self.tokens: TokenStage | None = None
        self.audit = audit
        self.policy: Policy = compile_policy(config)
        # The directory snapshot every worker of this server maps from ``snapshot_dir`` (directory/mapped.py);
        # without one (a Runtime of its own, in tests) a private directory made on first use.
        self.directory: SnapshotView | None = None
        self.directory_builds: set[asyncio.Task[None]] = set()  # base files built in the background (``shared``)
        self.snapshot_dir = snapshot_dir
        self._private_snapshot_dir: Path | None = None
        self._seen: tuple[int, ...] = (-1,) * len(POLICY_COUNTERS)
        self._refresh_lock = asyncio.Lock()
        self._identities: BoundedCache[tuple[Any, ...], Identity] = BoundedCache(IDENTITIES)
        self._live_users: BoundedCache[str, tuple[float, DirectoryUser | None]] = BoundedCache(LIVE_USERS)
        # Who may grant a permission, for 403 pages and access requests (admin/requests.py approvers_for): the
        # people last loaded (directory snapshot, People, loaded at) and (policy, people, permission, scope) ->
        # (worked out at, approvers). Per Runtime: a reload drops them with the policy they were read from.
        self.people: tuple[SnapshotView | None, People | None, float] = (None, None, 0.0)
        self.approvers: BoundedCache[tuple[Any, ...], tuple[float, list[Approver]]] = BoundedCache(APPROVERS)
        self._poller: asyncio.Task[None] | None = None
        self.clock = clock
        self._closed = False
        # When the Store last answered; decisions from older state are refused (fail closed).
        self.store_ok_at = time.monotonic()
        self._epoch: object | None = None
        self._epoch_board = b""
        self._epoch_until = -math.inf
        # What check_access remembers for this Runtime (rolegate.server.access.AccessMemo), made on first use.
        self.access_memo: AccessMemo | None = None
        self.max_staleness = config.storage.max_staleness.total_seconds()
        # scopes.<type>.lookup: where the app says an object lies on a directory miss (None: no type has one).
        self.object_lookup = ObjectLookups.from_config(config)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def build(cls, config: Config, generation: int = 1, *, base_dir: Path | None = None) -> "Runtime":
        """A Runtime without I/O resources (no store, audit or policy refresh): for tests of the data path."""
        identity = IdentityStage(config, base_dir=base_dir) if (config.oidc or config.session) else None
        return cls(config, Compiled(config), generation=generation, base_dir=base_dir, identity=identity)

    @classmethod
    async def create(
        cls,
        config: Config,
        *,
        base_dir: Path | None = None,
        generation: int = 1,
        audit_retention: bool = False,
        snapshot_dir: Path | None = None,
    ) -> "Runtime":
        """The full worker Runtime: opens the Store, the board, the audit log and every stage."""
        compiled = Compiled(config)
        store = await open_store(config.storage, base_dir=base_dir)
        runtime: Runtime | None = None
        audit: AuditLog | None = None
        try:
            board = VersionBoard(board_path_for(config.storage.url, base_dir))
            audit = AuditLog.from_config(store, config, base_dir=base_dir, run_retention=audit_retention)
            identity = None
            if config.oidc or config.session:
                identity = IdentityStage(config, base_dir=base_dir, store=store, board=board, audit=audit)
            runtime = cls(
                config,
                compiled,
                generation=generation,
                base_dir=base_dir,
                store=store,
                board=board,
                identity=identity,
                audit=audit,
                snapshot_dir=snapshot_dir,
            )
            audit.start()
            await runtime.refresh(force=True)
            if config.session is not None or config.tokens.key_secret is not None:
                from rolegate.identity.daypass import daypass_token_redeemer  # day passes: loaded only when used

                runtime.tokens = TokenStage(
                    config,
                    store,
                    board=board,
                    current_version=runtime.permission_version,
                    grants=runtime.unscoped_grants,
                    authenticate_session=identity.authenticate if identity is not None else None,
                    redeem_daypass=daypass_token_redeemer(runtime) if config.daypass is not None else None,
                    # every grant re-checks its subject as a request would: session, directory (and pass)
                    reload_identity=subject_check(runtime),
                    audit=audit,
                    clock=runtime.clock,
                )
                await runtime.tokens.open()
                if identity is not None:
                    identity.use_tokens(runtime.tokens.service)
            runtime._poller = asyncio.ensure_future(runtime._poll_store())
            return runtime
        except BaseException:
            # Not half-built: a worker that waits for the database and tries again must not leak a pool.
            if runtime is not None:
                await runtime.close()
            else:
                if audit is not None:
                    await audit.close()  # its sinks' files are open from from_config on
                await store.close()
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
        for build in self.directory_builds:  # before the store they read goes
            build.cancel()
        await self.forwarder.close()
        if self.object_lookup is not None:
            await self.object_lookup.close()
        if self.identity is not None:
            await self.identity.close()
        if self.tokens is not None and hasattr(self.tokens, "close"):
            await self.tokens.close()
        if self.audit is not None:
            await self.audit.close()
        if self.store is not None:
            await self.store.close()
        if self.board is not None:
            self.board.close()
        self.directory = None  # the mapping goes when the last request holding it does
        if self._private_snapshot_dir is not None:
            shutil.rmtree(self._private_snapshot_dir, ignore_errors=True)

    def _directory_files(self) -> Path:
        """Where this server's workers share the mapped directory snapshot."""
        if self.snapshot_dir is not None:
            return self.snapshot_dir
        if self._private_snapshot_dir is None:
            self._private_snapshot_dir = Path(tempfile.mkdtemp(prefix="rolegate-directory-"))
        return self._private_snapshot_dir

    # -- keeping the policy current ---------------------------------------------------------------

    def _board_versions(self) -> tuple[int, ...]:
        board = self.board
        return board.policy_versions() if board is not None else self._seen

    def epoch(self) -> object | None:
        """A token that stays the same object while nothing a remembered access answer depends on can
        have changed: no counter on the version board moved (policy, directory, day passes, sessions,
        keys, config; other instances' changes reach it through the Store poll), the Store answered
        within ``max_staleness``, and at most EPOCH_SECONDS passed. None without a board: nothing is
        remembered then."""
        board = self.board
        if board is None or self.store is None:
            return None
        snapshot = board.snapshot()
        now = time.monotonic()
        if snapshot != self._epoch_board or now >= self._epoch_until:
            self._epoch = object()
            self._epoch_board = snapshot
            self._epoch_until = min(now + EPOCH_SECONDS, self.store_ok_at + self.max_staleness)
        return self._epoch

    def policy_now(self) -> Policy | None:
        """``current_policy()`` when nothing moved and the store is fresh enough; None: await it."""
        if self.board is not None and self._board_versions() != self._seen:
            return None
        if self.store is not None and time.monotonic() - self.store_ok_at > self.max_staleness:
            return None
        return self.policy

    async def current_policy(self) -> Policy:
        """The policy as of now: recompiled first if anything changed since it was built.

        When the Store has been unreachable for longer than ``storage.max_staleness`` the last known
        state is no longer trusted and the request is refused with 503 (fail closed).
        """
        if self.board is not None and self._board_versions() != self._seen:
            await self.refresh()
        if self.store is not None and time.monotonic() - self.store_ok_at > self.max_staleness:
            raise ServiceUnavailable(
                f"the store has not answered for {time.monotonic() - self.store_ok_at:.0f}s "
                f"(max_staleness {self.max_staleness:.0f}s)"
            )
        return self.policy

    async def refresh(self, *, force: bool = False) -> None:
        """Recompile the policy from config + the Store's dynamic state (single flight)."""
        async with self._refresh_lock:
            versions = self._board_versions()
            if not force and versions == self._seen:
                return
            store = self.store
            if store is None:
                return
            try:
                counters = await _counters(store, POLICY_COUNTERS)
                if self.board is not None:
                    for name, value in counters.items():
                        self.board.raise_to(name, value)
                versions = tuple(max(counters[n], v) for n, v in zip(POLICY_COUNTERS, versions))
                if self.config.directory is not None and (force or versions[1] != self._seen[1]):
                    from rolegate.directory.shared import map_snapshot  # ldap3: only with a directory configured

                    self.directory = await map_snapshot(
                        store, self._directory_files(), self.directory, self.directory_builds
                    )
                    self._identities.clear()
                self.policy = await self._compile(store, sum(versions))
                self.store_ok_at = time.monotonic()
            except StoreUnavailable as exc:
                # Keep serving the last known state; the next request tries again.
                log.warning("store unavailable while refreshing the policy: %s", exc)
                return
            self._seen = versions

    async def _compile(self, store: Store, version: int) -> Policy:
        return await compile_live_policy(self.config, store, self.clock(), version)

    def permission_version(self) -> int:
        """The newest permission version known on this machine (what tokens' ``ver`` is checked against)."""
        board = self.board
        if board is None:
            return self.policy.version
        return max(self.policy.version, sum(board.get(name) for name in POLICY_COUNTERS))

    def unscoped_grants(self, principal: Principal) -> tuple[tuple[str, ...], frozenset[str]]:
        """Roles and permissions held globally, for access tokens (scoped ones are decided per request)."""
        identity = self._identities.get((principal.username,)) or self._identities.get(
            (principal.username, principal.groups)
        )
        if identity is None:
            daypass = getattr(principal, "daypass_id", None)
            identity = Identity(principal.username, () if daypass else principal.groups, daypass=daypass)
        return roles_of(self.policy, identity, None), effective_permissions(self.policy, identity, None)

    async def _poll_store(self) -> None:
        """Learn of changes made by other processes (CLI, other instances) within a fraction of a second."""
        names = (*POLICY_COUNTERS, "sessions", "keys")
        store, board = self.store, self.board
        assert store is not None and board is not None  # started by create() only, which opens both
        while True:
            await asyncio.sleep(STORE_POLL_SECONDS)
            try:
                counters = await _counters(store, names)
                self.store_ok_at = time.monotonic()
            except StoreUnavailable:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - never let the poller die
                log.exception("version poll failed")
                continue
            for name, value in counters.items():
                board.raise_to(name, value)

    # -- who is asking ------------------------------------------------------------------------------

    def identity_now(self, principal: Principal) -> Identity | None:
        """``identity_for()`` when this worker already knows the answer; None: await it."""
        if getattr(principal, "daypass_id", None) is not None:
            return None
        if self.config.directory is None:
            return self._identities.get((principal.username, principal.groups))
        return self._identities.get((principal.username,))

    async def identity_for(self, principal: Principal) -> Identity:
        """The authz Identity of a principal: directory groups and disabled flag when a directory is set."""
        daypass = getattr(principal, "daypass_id", None)
        if daypass is not None:
            return Identity(principal.username, (), daypass=daypass)
        if self.config.directory is None:
            key: tuple[Any, ...] = (principal.username, principal.groups)
            identity = self._identities.get(key)
            if identity is None:
                identity = self._remember(key, Identity(principal.username, principal.groups))
            return identity
        key = (principal.username,)
        identity = self._identities.get(key)
        if identity is not None:
            return identity
        user = self.directory.user(principal.username) if self.directory is not None else None
        if user is None:
            user = await self._live_user(principal.username)
        if user is None:
            # Not in the directory at all (deleted, or never there): no access, like a disabled account.
            return Identity(principal.username, (), disabled=True)
        return self._remember(key, Identity(principal.username, user.groups, disabled=user.disabled))

    def _remember(self, key: tuple[Any, ...], identity: Identity) -> Identity:
        return self._identities.put(key, identity)

    async def _live_user(self, username: str) -> DirectoryUser | None:
        """A user the snapshot does not hold yet (a new hire): read live, cached briefly."""
        now = time.monotonic()
        cached = self._live_users.get(username)
        if cached is not None and now - cached[0] < LIVE_LOOKUP_SECONDS:
            return cached[1]
        from rolegate.directory import DirectoryUnavailable, lookup_user  # ldap3: only with a directory configured

        try:
            user = await lookup_user(self.config, username)
        except DirectoryUnavailable as exc:
            log.warning("directory lookup of a user missing from the snapshot failed: %s", exc)
            user = None
        self._live_users.put(username, (now, user))
        return user

    # -- response stages ------------------------------------------------------------------------------

    def redaction_filter(self, route_index: int) -> RedactionFilter | None:
        """The forwarder hook that removes a route's redacted JSON fields (None: route redacts nothing)."""
        return self.redactors.get(route_index)


async def _counters(store: Store, names: tuple[str, ...]) -> dict[str, int]:
    counters = getattr(store, "counters", None)
    if counters is not None:
        found: dict[str, int] = await counters(list(names))
        return found
    return {name: await store.counter(name) for name in names}


class RuntimeHolder:
    """Holds the current Runtime; a reload swaps it between two requests, never during one."""

    __slots__ = ("runtime", "config_path", "base_dir")

    def __init__(self, runtime: Runtime, config_path: str | None = None) -> None:
        self.runtime = runtime
        self.config_path = config_path
        self.base_dir = Path(config_path).resolve().parent if config_path else Path.cwd()

"""The compiled policy: immutable indexes built once per config or state change, plus its cache.

Evaluation (``rolegate.authz.evaluate``) reads these indexes; nothing here changes after
``compile_policy`` except the bounded cache of per-identity-shape results, which lives
on the policy so that a new policy (a new ``version``) starts with an empty one.
"""

from __future__ import annotations

import math
from sys import intern
from itertools import islice
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone

from rolegate.authz.decision import Decision
from rolegate.authz.identity import Identity, subject_key
from rolegate.authz.roles import FlatRole
from rolegate.authz.scopes import ScopeTree, is_scope
from rolegate.limits import ENTRY_REASONS
from rolegate.memo import BoundedCache

__all__ = ["Assignment", "BindingIndex", "CompiledBinding", "ObjectGrant", "Policy", "SettingGrant", "format_until"]

INF = math.inf
DEFAULT_CACHE_SIZE = 65536


def format_until(until: float) -> str:
    return datetime.fromtimestamp(until, timezone.utc).isoformat(timespec="seconds")


class CompiledBinding:
    """One role binding: subject -> role, at a scope (None = everywhere), until a time (inf = always)."""

    __slots__ = ("subject_kind", "subject", "role", "scope", "until", "allow", "deny", "source")

    def __init__(
        self, subject_kind: str, subject: str, role: FlatRole, scope: str | None, until: float, source: str
    ) -> None:
        self.subject_kind = subject_kind
        self.subject = subject
        self.role = role
        self.scope = scope
        self.until = until
        self.allow = role.allow
        self.deny = role.deny
        self.source = source

    def describe(self) -> str:
        where = f"at {self.scope}" if self.scope else "globally"
        until = f" until {format_until(self.until)}" if self.until != INF else ""
        return f"{self.subject_kind} {self.subject} holds role {self.role.name} {where}{until} ({self.source})"

    def __repr__(self) -> str:
        return f"<CompiledBinding {self.describe()}>"


class ObjectGrant:
    """``permission`` on one ``object`` (e.g. ``task:42``) for a user, group or day pass."""

    __slots__ = ("subject_kind", "subject", "permission", "object", "scope", "until", "source")

    def __init__(
        self,
        subject_kind: str,
        subject: str,
        permission: str,
        object: str,
        scope: str | None,
        until: float,
        source: str,
    ) -> None:
        self.subject_kind = subject_kind
        self.subject = subject
        self.permission = permission
        self.object = object
        self.scope = scope
        self.until = until
        self.source = source

    def describe(self) -> str:
        where = f" within {self.scope}" if self.scope else ""
        until = f" until {format_until(self.until)}" if self.until != INF else ""
        return (
            f"{self.subject_kind} {self.subject} was added to {self.object}: "
            f"{self.permission}{where}{until} ({self.source})"
        )


class SettingGrant:
    """A user setting switched on for one user, everywhere (``scope`` None) or at a scope and below.

    It grants nothing by itself: a role the user holds there lists what it adds (``if_setting``).
    ``until`` (inf: always) ends it like a binding's: an approved access request switches one on for
    the approved time.
    """

    __slots__ = ("name", "username", "scope", "source", "by", "at", "until")

    def __init__(
        self,
        name: str,
        username: str,
        scope: str | None,
        source: str,
        by: str | None = None,
        at: str | None = None,
        until: float = INF,
    ) -> None:
        self.name = name
        self.username = username
        self.scope = scope
        self.source = source
        self.by = by  # who switched it on (admin API), and when
        self.at = at
        self.until = until

    def describe(self) -> str:
        where = f"at {self.scope}" if self.scope else "everywhere"
        who = f"switched on by {self.by}" + (f" at {self.at}" if self.at else "") + "; " if self.by else ""
        until = f" until {format_until(self.until)}" if self.until != INF else ""
        return f"user setting {self.name!r} is on for {self.username} {where}{until} ({who}{self.source})"


class Assignment:
    """An app marked ``username`` as assigned to ``object`` (workorder:1 -> bob): roles listing permissions
    under ``on_assigned`` grant them there (and, by scope type, at the scope the object lies in directly)."""

    __slots__ = ("object", "username", "by", "at", "source")

    def __init__(
        self, object: str, username: str, by: str | None = None, at: str | None = None, source: str = "admin API"
    ) -> None:
        self.object = object
        self.username = username
        self.by = by
        self.at = at
        self.source = source

    def describe(self) -> str:
        who = ", ".join(x for x in ((f"by {self.by}" if self.by else ""), (f"at {self.at}" if self.at else "")) if x)
        return f"{self.username} is assigned to {self.object} ({who or self.source})"


# A grant through an assignment: the binding whose role lists the permissions, the assignment, how it reaches
# the scope ("itself", or "parent": the scope is where the assigned object lies), and the permissions.
Assigned = tuple[CompiledBinding, Assignment, str, frozenset[str]]

# One conditional grant: a binding whose role lists permissions under a setting that is on here.
Conditional = tuple[CompiledBinding, SettingGrant, frozenset[str]]
# setting -> permission -> the roles that grant it with that setting (for reasons).
Unlocks = Mapping[str, Mapping[str, tuple[str, ...]]]


class Entry:
    """What one identity shape holds at one scope; valid while ``not_before <= now < expires``."""

    __slots__ = (
        "allow",
        "deny",
        "holdings",
        "settings",
        "conditional",
        "scope",
        "not_before",
        "expires",
        "used",
        "note",
        "unlocks",
        "assigned",
        "_reasons",
    )

    def __init__(
        self,
        allow: frozenset[str],
        deny: frozenset[str],
        holdings: tuple[CompiledBinding, ...],
        settings: tuple[SettingGrant, ...],
        scope: str | None,
        not_before: float,
        expires: float,
        note: str | None = None,
        conditional: tuple[Conditional, ...] = (),
        unlocks: Unlocks | None = None,
        assigned: tuple[Assigned, ...] = (),
    ) -> None:
        self.allow = allow
        self.deny = deny
        self.holdings = holdings
        self.settings = settings  # the user's settings switched on here (at this scope, above, everywhere)
        self.conditional = conditional
        self.scope = scope
        self.not_before = not_before
        self.expires = expires
        self.used = 0.0
        self.note = note
        self.unlocks = unlocks or {}
        self.assigned = assigned  # what roles held here grant through the user's assignments
        self._reasons: BoundedCache[tuple[str, bool], tuple[str, ...]] = BoundedCache(ENTRY_REASONS)

    def reasons_for(self, permission: str, allowed: bool) -> tuple[str, ...]:
        """Human-readable grants and denies behind a decision on ``permission`` (worked out once)."""
        reasons = self._reasons.get((permission, allowed))
        if reasons is None:
            reasons = self._reasons.put((permission, allowed), self._reasons_for(permission, allowed))
        return reasons

    def _reasons_for(self, permission: str, allowed: bool) -> tuple[str, ...]:
        where = self.scope or "(global)"
        if self.note is not None:
            return (self.note,)
        granting = [f"allow: {b.describe()}" for b in self.holdings if permission in b.allow]
        granting += [
            f"allow: role {b.role.name} grants {permission} with {s.describe()}; {b.describe()}"
            for b, s, perms in self.conditional
            if permission in perms
        ]
        granting += [
            f"allow: role {b.role.name} grants {permission} on objects assigned to its holder "
            f"({'the object itself' if how == 'itself' else f'{where}, where {a.object} lies'}): "
            f"{a.describe()}; {b.describe()}"
            for b, a, how, perms in self.assigned
            if permission in perms
        ]
        if allowed:
            return tuple(granting)
        denying = [
            f"deny: role {b.role.name} denies {permission}; {b.describe()}"
            for b in self.holdings
            if permission in b.deny
        ]
        if denying:
            overruled = [f"overruled {g}" for g in granting]
            return (*denying, *overruled)
        held = ", ".join(sorted({b.role.name for b in self.holdings})) or "no role"
        reasons = [f"deny: no binding, user setting or object grant gives {permission} at {where} (holds here: {held})"]
        on = {s.name for s in self.settings}
        for b in self.holdings:  # the role would give it with a setting that is off here
            for setting, perms in b.role.conditional.items():
                if permission in perms and setting not in on:
                    reasons.append(
                        f"note: role {b.role.name} grants {permission} only with user setting "
                        f"{setting!r} switched on, and it is off here"
                    )
        held_roles = {b.role.name for b in self.holdings}
        for s in self.settings:  # the setting is on, but grants it only with a role not held here
            roles = self.unlocks.get(s.name, {}).get(permission)
            if roles and not held_roles & set(roles):
                reasons.append(
                    f"note: {s.describe()}, but it grants {permission} only with role "
                    f"{' or '.join(roles)}, not held here (a setting alone grants nothing)"
                )
        for b in self.holdings:  # the role would give it on an object assigned to the user: not this one
            for type_name, perms in b.role.on_assigned.items():
                if permission in perms and type_name == "*":
                    reasons.append(
                        f"note: role {b.role.name} grants {permission} only on objects assigned to the "
                        f"user (on_assigned), and {where} is not assigned to them"
                    )
                elif permission in perms:
                    reasons.append(
                        f"note: role {b.role.name} grants {permission} only at a {type_name} assigned to "
                        f"the user or holding an object assigned to them (on_assigned.{type_name}), and "
                        f"{where} is neither"
                    )
        return tuple(dict.fromkeys(reasons))


class BindingIndex:
    """Bindings and user settings indexed by (subject, scope), and the entries computed from them.

    ``holds[(subject, scope)]`` is what the subject's roles give at that scope *and every scope
    above it* (its parents, and globally), worked out when the policy is compiled. What a role
    gives only with a user setting (``if_setting``) is not in it: it depends on the user's
    settings at the request's scope as well as on who holds the role, so a decision that the
    index does not allow, for a user with settings and a permission some role makes
    conditional, is answered from the (cached) entry instead. Scopes form a tree (scope types cannot nest in a cycle), so a decision
    at ``building:a`` probes ``(subject, "building:a")`` and climbs the chain only for a
    subject with nothing there: usually one probe per subject, into one dict, which is
    what a precomputed set lookup costs. ``entry`` gathers everything held at a scope,
    cached, for tokens, ``/me`` and reasons. It holds no decisions, so a memoized decision
    may point back at it without keeping its policy alive.
    """

    __slots__ = (
        "scopes",
        "cache",
        "cache_size",
        "holds",
        "held_by",
        "may_deny",
        "settings_by_user",
        "chains",
        "conditional",
        "unlocks",
        "_chains_limit",
        "_at",
        "assigned_perms",
        "assigned_users",
        "_assigned",
        "_assigned_near",
        "assigned_objects",
        "scopes_by_subject",
    )

    def __init__(
        self,
        bindings: tuple[CompiledBinding, ...],
        setting_grants: tuple[SettingGrant, ...],
        scopes: ScopeTree,
        cache_size: int,
        unlocks: Unlocks | None = None,
        assignments: tuple[Assignment, ...] = (),
    ) -> None:
        self.scopes = scopes
        self.cache_size = max(16, cache_size)
        by_user: dict[str, list[SettingGrant]] = {}
        for g in setting_grants:
            by_user.setdefault(g.username, []).append(g)
        self.settings_by_user = {u: tuple(v) for u, v in by_user.items()}
        self.unlocks = unlocks or {}
        # Permissions some role grants only with a setting: only these can take the entry's path.
        self.conditional = frozenset(p for perms in self.unlocks.values() for p in perms)
        # scope -> its chain, or None for a malformed scope (read directly by the hot path): worked
        # out here for every scope the policy knows (bound, or placed in the tree), and on first
        # sight for others, up to ``cache_size`` of them (scopes come from request paths).
        self.chains: dict[str | None, tuple[str | None, ...] | None] = {None: (None,)}
        self._chains_limit = 0
        for scope in {
            *(b.scope for b in bindings),
            *(g.scope for g in setting_grants),
            *scopes.parents,
            *scopes.parents.values(),
        }:
            self.chain(scope)
        self._chains_limit = len(self.chains) + self.cache_size
        # (subject, scope) -> the bindings held exactly there. Keys are interned, as are
        # identities' subjects and scope chains, so that probes compare pointers.
        at: dict[tuple[str, str | None], list[CompiledBinding]] = {}
        for b in bindings:
            at.setdefault((subject_key(b.subject_kind, b.subject), _intern(b.scope)), []).append(b)
        self._at = {k: tuple(v) for k, v in at.items()}
        by_subject: dict[str, list[str]] = {}
        for subject, scope in self._at:
            if scope is not None:
                by_subject.setdefault(subject, []).append(scope)
        # subject -> the scopes where it holds a binding (the where claim's candidates)
        self.scopes_by_subject = {k: tuple(v) for k, v in by_subject.items()}
        # Climbing from a scope to the first level where a subject holds something, and reading
        # that level's union of everything above it, equals the union over the whole chain because
        # a chain's tail is its own chain: config refuses scope types that nest in a cycle or
        # MAX_SCOPE_DEPTH deep, so no chain is ever cut short.
        holds: dict[tuple[str, str | None], frozenset[str] | _Held] = {}
        for subject, scope in self._at:
            chain = self.chains[scope] or ()
            held = _Held(tuple(b for level in chain for b in self._at.get((subject, level), ())))
            holds[(subject, scope)] = held.allow if held.simple else held
        self.holds = holds
        # Subjects holding anything anywhere: a group bound nowhere (most of a directory's)
        # costs a decision one probe, not one per level of the scope's chain.
        self.held_by = frozenset(subject for subject, _ in holds)
        # Permissions some binding denies: a decision may stop at its first allow for any other.
        self.may_deny = frozenset().union(*(b.deny for b in bindings))
        # Assignments (on_assigned): like settings, only users with one and permissions some bound role lists
        # under on_assigned take the entry's path. (user, object) -> the assignment; (user, scope) -> those of
        # the user's assigned objects lying directly in that scope (the tree's parent of the object).
        self.assigned_perms = frozenset().union(*(b.role.assigned_permissions() for b in bindings))
        self.assigned_users = frozenset(a.username for a in assignments)
        own: dict[tuple[str, str], Assignment] = {}
        near: dict[tuple[str, str], list[Assignment]] = {}
        for a in assignments:
            own.setdefault((a.username, a.object), a)
            parent = scopes.parents.get(a.object)
            if parent is not None:
                near.setdefault((a.username, parent), []).append(a)
        self._assigned = own
        self._assigned_near = {k: tuple(v) for k, v in near.items()}
        objects_by_user: dict[str, list[str]] = {}
        for user, obj in own:
            objects_by_user.setdefault(user, []).append(obj)
        self.assigned_objects = {u: tuple(v) for u, v in objects_by_user.items()}  # user -> their objects (where claim)
        # (identity shape, scope) -> Entry: bounded LRU (evicted by last use, half at a time).
        self.cache: dict[tuple[str, str | None], Entry] = {}

    def chain(self, scope: str | None) -> tuple[str | None, ...] | None:
        """``scope``, its ancestors and None (global), nearest first; None if ``scope`` is malformed."""
        chains = self.chains
        chain = chains.get(scope, _MISSING)
        if chain is _MISSING:
            chain = (*map(intern, self.scopes.chain(scope)), None) if is_scope(scope) else None
            if self._chains_limit == 0 or len(chains) < self._chains_limit:
                chains[scope] = chain
        return chain  # type: ignore[return-value]  # never _MISSING here: a miss was replaced above

    def entry(self, identity: Identity, scope: str | None, now: float) -> Entry:
        """The cached entry for (identity shape, scope) valid at ``now``; computed on a miss."""
        key = (identity.key, scope)
        cache = self.cache
        entry = cache.get(key)
        if entry is None or not (entry.not_before <= now < entry.expires):
            entry = self.compute_entry(identity, scope, now)
            if len(cache) >= self.cache_size:
                self._evict()
            cache[key] = entry
        entry.used = now
        return entry

    def reasons(
        self, identity: Identity, scope: str | None, at: float, permission: str, allowed: bool
    ) -> tuple[str, ...]:
        """Why a decision made at ``at`` went the way it did (read lazily by ``Decision.reasons``)."""
        return self.entry(identity, scope, at).reasons_for(permission, allowed)

    def _evict(self) -> None:
        # Least recently used half goes; amortized, this keeps a hit down to one attribute store.
        cache = self.cache
        ordered = sorted(cache.items(), key=lambda item: item[1].used)
        for key, _ in ordered[: len(ordered) // 2 + 1]:
            cache.pop(key, None)

    def compute_entry(
        self, identity: Identity, scope: str | None, now: float, chain: tuple[str | None, ...] | None = None
    ) -> Entry:
        """Everything ``identity`` holds at ``scope`` (and its parents, and globally) at ``now``.

        ``chain`` replaces the tree's chain of ``scope``: an object a lookup placed for one request
        (``rolegate.authz.objects``) is judged at itself and the chain of the parent it was given.
        """
        if chain is None:
            chain = self.chain(scope)
        if chain is None:
            return Entry(
                frozenset(),
                frozenset(),
                (),
                (),
                scope,
                -INF,
                INF,
                note=f"deny: {scope!r} is not a valid scope (type:id)",
            )
        levels = set(chain)
        allow: set[str] = set()
        deny: set[str] = set()
        holdings: list[CompiledBinding] = []
        not_before, expires = -INF, INF
        at = self._at
        for bindings in (
            at[key] for subject in identity.subjects for level in chain if (key := (subject, level)) in at
        ):
            live, not_before, expires = _live(bindings, now, not_before, expires)
            for b in live:
                allow |= b.allow
                deny |= b.deny
                holdings.append(b)
        # The user's settings on here (at this scope, above it, or everywhere), and what the roles held
        # here grant with them: a setting alone grants nothing.
        settings = tuple(s for s in self.settings_by_user.get(identity.username, ()) if s.scope in levels)
        if settings and any(s.until != INF for s in settings):
            # A setting switched on until a time counts like a binding: only before it ends, and the
            # entry's window closes when it does.
            live_settings: list[SettingGrant] = []
            for s in settings:
                if s.until <= now:
                    not_before = max(not_before, s.until)
                    continue
                expires = min(expires, s.until)
                live_settings.append(s)
            settings = tuple(live_settings)
        conditional: list[Conditional] = []
        if settings:
            on: dict[str, SettingGrant] = {}
            for s in settings:
                on.setdefault(s.name, s)  # nearest-listed first; any one of them meets the condition
            for b in holdings:
                for name, perms in b.role.conditional.items():
                    setting = on.get(name)
                    if setting is not None:
                        allow |= perms
                        conditional.append((b, setting, perms))
        assigned: list[Assigned] = []
        if scope is not None and identity.username in self.assigned_users:
            # Roles held here that grant on assigned objects: here is one of the user's (itself), or, for the
            # permissions listed under this scope's type, the scope an assigned object lies in directly.
            own = self._assigned.get((identity.username, scope))
            near = self._assigned_near.get((identity.username, scope))
            if own is not None or near:
                scope_type = scope.split(":", 1)[0]
                for b in holdings:
                    for type_name, perms in b.role.on_assigned.items():
                        if own is not None and type_name in ("*", scope_type):
                            allow |= perms
                            assigned.append((b, own, "itself", perms))
                        elif near and type_name == scope_type:
                            allow |= perms
                            assigned.append((b, near[0], "parent", perms))
        allow -= deny
        return Entry(
            frozenset(allow),
            frozenset(deny),
            tuple(holdings),
            settings,
            scope,
            not_before,
            expires,
            conditional=tuple(conditional),
            unlocks=self.unlocks,
            assigned=tuple(assigned),
        )


def _live(
    bindings: tuple[CompiledBinding, ...], now: float, not_before: float, expires: float
) -> tuple[list[CompiledBinding], float, float]:
    """The bindings still holding at ``now``, and the validity window (not_before, expires) narrowed
    to them. An expired binding grants and denies nothing; the window must not outlive a clock
    going back, so it starts no earlier than the latest expiry passed."""
    live = []
    for b in bindings:
        if b.until <= now:
            if b.until > not_before:
                not_before = b.until
            continue
        if b.until < expires:
            expires = b.until
        live.append(b)
    return live, not_before, expires


class _Held:
    """What one subject holds at one scope and above: the bindings, and their unions while none expired.

    With one binding (the usual case) the unions are the role's own sets, shared by everyone
    holding the role, so a decision reads memory others keep warm.
    """

    __slots__ = ("bindings", "allow", "deny", "first_until", "simple")

    def __init__(self, bindings: tuple[CompiledBinding, ...]) -> None:
        self.bindings = bindings
        if len(bindings) == 1:
            allow, deny = bindings[0].allow, bindings[0].deny
        else:
            allow = frozenset().union(*(b.allow for b in bindings))
            deny = frozenset().union(*(b.deny for b in bindings))
        self.deny: frozenset[str] | None = deny or None  # None: nothing to check
        self.allow = allow if self.deny is None else allow - self.deny
        self.first_until = min((b.until for b in bindings), default=INF)
        self.simple = self.deny is None and self.first_until == INF

    def judge(self, permission: str, now: float, not_before: float, expires: float) -> tuple[int, float, float]:
        """(-1 if a binding still holding at ``now`` denies ``permission``, 1 if one allows it, else 0),
        and the window (not_before, expires) narrowed to the bindings that answered."""
        if now < self.first_until:  # every binding still holds: the unions answer
            if self.first_until < expires:
                expires = self.first_until
            if self.deny is not None and permission in self.deny:
                return -1, not_before, expires
            return (1 if permission in self.allow else 0), not_before, expires
        live, not_before, expires = _live(self.bindings, now, not_before, expires)
        verdict = 0
        for b in live:
            if permission in b.deny:
                return -1, not_before, expires
            if permission in b.allow:
                verdict = 1
        return verdict, not_before, expires


_MISSING = object()


def _intern(scope: str | None) -> str | None:
    return None if scope is None else intern(scope)


class Policy:
    """A compiled, immutable authorization policy with a ``version``."""

    __slots__ = (
        "version",
        "catalogue",
        "catalogue_order",
        "roles",
        "bindings",
        "scopes",
        "settings",
        "unlocks",
        "setting_grants",
        "object_grants",
        "problems",
        "config",
        "assignments",
        "_index",
        "_grants",
        "_grants_by_object",
        "_cache",
        "_decisions",
        "_decisions_size",
        "_cache_size",
    )

    def __init__(
        self,
        *,
        version: int,
        catalogue_order: tuple[str, ...],
        roles: dict[str, FlatRole],
        bindings: tuple[CompiledBinding, ...],
        scopes: ScopeTree,
        settings: Iterable[str],
        setting_grants: tuple[SettingGrant, ...],
        object_grants: tuple[ObjectGrant, ...],
        problems: tuple[str, ...],
        config: object = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        assignments: tuple[Assignment, ...] = (),
    ) -> None:
        self.version = version
        self.catalogue_order = catalogue_order
        self.catalogue = frozenset(catalogue_order)
        self.roles = roles
        self.bindings = bindings
        self.scopes = scopes
        # setting -> every permission some role grants with it; setting -> permission -> those roles.
        unlocks: dict[str, dict[str, list[str]]] = {name: {} for name in settings}
        for role in roles.values():
            for name, perms in role.conditional.items():
                for perm in perms:
                    unlocks.setdefault(name, {}).setdefault(perm, []).append(role.name)
        self.unlocks = {name: {p: tuple(r) for p, r in perms.items()} for name, perms in unlocks.items()}
        self.settings = {name: frozenset(self.unlocks.get(name, ())) for name in settings}
        self.setting_grants = setting_grants
        self.object_grants = object_grants
        self.problems = problems
        self.config = config
        self.assignments = assignments  # who apps assigned to which object (on_assigned roles grant there)
        self._index = BindingIndex(bindings, setting_grants, scopes, cache_size, self.unlocks, assignments)
        self._cache = self._index.cache  # the same dict: (identity shape, scope) -> Entry
        grants: dict[tuple[str, str], list[ObjectGrant]] = {}
        by_object: dict[str, list[ObjectGrant]] = {}
        for g in object_grants:
            grants.setdefault((g.object, g.permission), []).append(g)
            by_object.setdefault(g.object, []).append(g)
        self._grants = {k: tuple(v) for k, v in grants.items()}
        self._grants_by_object = {k: tuple(v) for k, v in by_object.items()}
        # (identity shape, scope, permission) -> Decision: repeated decisions in one lookup;
        # bounded, oldest-inserted half evicted when full (a decision is re-made from the index).
        self._decisions: dict[tuple[str, str | None, str], Decision] = {}
        self._decisions_size = max(64, 4 * cache_size)
        self._cache_size = max(16, cache_size)

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_cache_size"):
            raise AttributeError("Policy is immutable; compile a new one")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return (
            f"<Policy v{self.version}: {len(self.roles)} roles, {len(self.bindings)} bindings, "
            f"{len(self.object_grants)} object grants>"
        )

    # --- evaluation support (used by rolegate.authz.evaluate) ------------------------

    def entry(self, identity: Identity, scope: str | None, now: float) -> Entry:
        """The cached entry for (identity shape, scope) valid at ``now``; computed on a miss."""
        return self._index.entry(identity, scope, now)

    def compute_entry(self, identity: Identity, scope: str | None, now: float) -> Entry:
        """Everything ``identity`` holds at ``scope`` at ``now``, uncached."""
        return self._index.compute_entry(identity, scope, now)

    def entry_in(self, identity: Identity, obj: str, parent: str, now: float) -> Entry:
        """Everything ``identity`` holds at ``obj`` placed in ``parent`` for one request (a lookup's answer,
        not in the tree), uncached: at ``obj`` itself, at ``parent`` and above, and globally."""
        index = self._index
        above = index.chain(parent)
        if above is None:
            return index.compute_entry(identity, parent, now)  # malformed: holds nothing, says why
        return index.compute_entry(identity, obj, now, chain=(intern(obj), *above))

    def memoize(self, key: tuple[str, str | None, str], decision: Decision) -> None:
        decisions = self._decisions
        if len(decisions) >= self._decisions_size:
            for old in list(islice(decisions, len(decisions) // 2 + 1)):
                decisions.pop(old, None)
        decisions[key] = decision

    def forget(self, identity: Identity, scope: str | None, permission: str) -> None:
        """Drop one memoized decision (the bench times first decisions this way)."""
        self._decisions.pop((identity.key, scope, permission), None)

    def clear_caches(self) -> None:
        """Forget every memoized decision and entry."""
        self._decisions.clear()
        self._index.cache.clear()

    def assigned_on(
        self, entry: Entry, identity: Identity, permission: str, obj: str
    ) -> tuple[CompiledBinding, Assignment] | None:
        """A role held where ``entry`` is that grants ``permission`` on ``obj`` because ``obj`` is assigned to
        the user (``on_assigned``, for the object itself or its type), and that assignment; else None."""
        assignment = self._index._assigned.get((identity.username, obj))
        if assignment is None:
            return None
        obj_type = obj.split(":", 1)[0]
        for b in entry.holdings:
            for type_name, perms in b.role.on_assigned.items():
                if permission in perms and type_name in ("*", obj_type):
                    return b, assignment
        return None

    def object_grants_for(
        self, identity: Identity, permission: str | None, obj: str, scope: str | None, now: float
    ) -> list[ObjectGrant]:
        """Unexpired grants of ``permission`` (any permission if None) on ``obj`` held by ``identity``."""
        if permission is None:
            candidates = self._grants_by_object.get(obj, ())
        else:
            candidates = self._grants.get((obj, permission), ())
        if not candidates:
            return []
        subjects = identity.subjects
        # A grant made at a scope (carol's, at building:a) reaches the object only if the object lies
        # there: its own place decides when its type is a declared scope type (task:42 in building:a),
        # never the scope the request names; an object of an undeclared type goes by the request's scope.
        if obj.split(":", 1)[0] in self.scopes.types:
            chain = self.scopes.chain(obj) if self.scopes.unplaced(obj) is None else ()
        else:
            chain = self.scopes.chain(scope) if scope is not None and is_scope(scope) else ()
        return [
            g
            for g in candidates
            if f"{g.subject_kind[0]}:{g.subject}" in subjects
            and now < g.until
            and (g.scope is None or g.scope in chain)
        ]

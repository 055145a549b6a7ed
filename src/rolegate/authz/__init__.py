"""The authorization engine: pure values in (identity, permission, scope), decisions out.

No web framework here: the request pipeline, admin API and CLI call these functions.
"""

from rolegate.authz.compiler import compile_policy
from rolegate.authz.decision import Decision
from rolegate.authz.evaluate import decide, decide_object_only, effective_permissions, holdings_of, roles_of
from rolegate.authz.identity import Identity
from rolegate.authz.policy import CompiledBinding, ObjectGrant, Policy, SettingGrant

__all__ = [
    "CompiledBinding",
    "Decision",
    "Identity",
    "ObjectGrant",
    "Policy",
    "SettingGrant",
    "compile_policy",
    "decide",
    "decide_object_only",
    "effective_permissions",
    "holdings_of",
    "roles_of",
]

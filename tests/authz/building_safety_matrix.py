"""The permission matrix of the building-safety product (config/examples/building-safety.yaml), as data.

Shared by the in-process walk (tests/authz) and the walk through the real proxy.
Each cell is ALLOW, NONE, or a condition with what meets it.
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIG = "config/examples/building-safety.yaml"

ALLOW = "allow"
NONE = "none"
SETTING = "If enabled in user settings"
TASK = "If added to a task"
CLIENT = "If added to client"

ROLES = ("admin", "risk_assessor", "responsible", "user")

# How a person holding each role column looks to rolegate (groups, and where the role is held).
ROLE_GROUPS = {
    "admin": frozenset({"bs-admins"}),
    "risk_assessor": frozenset({"bs-risk-assessors"}),
    "responsible": frozenset({"bs-responsible-a"}),
    "user": frozenset({"bs-users"}),
}
BUILDING = "building:a"  # where every cell is checked (responsible holds its role here)
OTHER_BUILDING = "building:b"  # responsible of a holds nothing extra here
CLIENT_SCOPE = "client:acme"  # buildings a and b are in client acme
TASK_OBJECT = "task:42"


@dataclass(frozen=True)
class Row:
    area: str  # the seed's wording
    permission: str
    cells: tuple[str, str, str, str]  # admin, risk assessor, 1st/2nd responsible, user
    setting: str | None = None  # the user setting that meets SETTING cells (one per row)


A, N, S, T, C = ALLOW, NONE, SETTING, TASK, CLIENT

ROWS: tuple[Row, ...] = (
    Row("Building dashboard", "dashboard:view", (A, A, A, A)),
    Row("View risk assessment and control scheme", "risk_assessment:view", (A, A, A, A)),
    Row("Change risk assessment and control scheme", "risk_assessment:edit", (N, A, N, N)),
    Row("Activate control measures", "controls:activate", (A, A, A, N)),
    Row("Change building settings", "building_settings:edit", (A, A, A, N)),
    Row("Add/delete/change user roles and rights", "user_roles:edit", (A, N, A, N)),
    Row("Create tasks", "tasks:create", (A, A, A, N)),
    Row("Task settings", "tasks:configure", (A, A, A, N)),
    Row("Schedule control measures", "controls:schedule", (A, A, A, N)),
    Row("Task order", "tasks:order", (A, A, A, A)),
    Row("Manage vacancy in rooms", "vacancy:manage", (A, S, S, S), "vacancy"),
    Row("Perform control measures", "controls:perform", (T, T, T, T)),
    Row("Sensor management", "sensors:manage", (A, N, N, N)),
    Row("View documents", "documents:view", (A, A, A, S), "documents_view"),
    Row("Add documents", "documents:add", (A, A, S, S), "documents_add"),
    Row("Add/delete/change document", "documents:edit", (A, A, S, S), "documents_edit"),
    Row("Download logbook", "logbook:download", (A, A, S, S), "logbook"),
    Row("View tasks history", "tasks:history", (A, A, A, A)),
    Row("View dashboards", "client_dashboards:view", (C, N, N, N)),
    Row("View trend analysis", "trends:view", (A, A, A, N)),
    Row("Create assets in the app", "assets:create", (A, A, S, S), "assets"),
    Row("Add/edit/delete QR codes", "qrcodes:edit", (A, A, S, S), "qrcodes"),
)

# A request per permission that the example config routes (method, path) - for walks through the proxy.
REQUESTS = {
    "dashboard:view": ("GET", "/buildings/a/dashboard"),
    "risk_assessment:view": ("GET", "/buildings/a/risk-assessment"),
    "risk_assessment:edit": ("PUT", "/buildings/a/risk-assessment"),
    "controls:activate": ("POST", "/buildings/a/controls/c1/activate"),
    "building_settings:edit": ("PUT", "/buildings/a/settings"),
    "user_roles:edit": ("POST", "/buildings/a/user-roles/heidi"),
    "tasks:create": ("POST", "/buildings/a/tasks"),
    "tasks:configure": ("PUT", "/buildings/a/tasks/42/settings"),
    "controls:schedule": ("POST", "/buildings/a/controls/c1/schedule"),
    "tasks:order": ("GET", "/buildings/a/task-order"),
    "vacancy:manage": ("PUT", "/buildings/a/rooms/r1/vacancy"),
    "controls:perform": ("POST", "/tasks/42/controls/c1/perform"),
    "sensors:manage": ("GET", "/buildings/a/sensors/s1"),
    "documents:view": ("GET", "/buildings/a/documents/d1"),
    "documents:add": ("POST", "/buildings/a/documents"),
    "documents:edit": ("PUT", "/buildings/a/documents/d1"),
    "logbook:download": ("GET", "/buildings/a/logbook/download"),
    "tasks:history": ("GET", "/buildings/a/tasks/history"),
    "client_dashboards:view": ("GET", "/clients/acme/dashboards"),
    "trends:view": ("GET", "/buildings/a/trends"),
    "assets:create": ("POST", "/buildings/a/assets"),
    "qrcodes:edit": ("POST", "/buildings/a/qrcodes/q1"),
}


def cells() -> list[tuple[Row, str, str]]:
    """Every (row, role, expected) of the table: 22 x 4."""
    return [(row, role, row.cells[i]) for row in ROWS for i, role in enumerate(ROLES)]


def scope_for(permission: str) -> str | None:
    """Where the cell is checked: the client for client dashboards, the task (in building a) for tasks."""
    if permission == "client_dashboards:view":
        return CLIENT_SCOPE
    if permission == "controls:perform":
        return TASK_OBJECT
    return BUILDING

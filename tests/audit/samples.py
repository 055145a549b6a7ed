"""One event of every kind, as the stages of rolegate would build them."""

from __future__ import annotations

from rolegate.audit import (
    AuditEvent,
    admin_change_event,
    daypass_event,
    decision_event,
    request_event,
    signin_event,
    signout_event,
    sync_event,
)


def one_of_each() -> list[AuditEvent]:
    return [
        decision_event(
            decision="allow",
            user="alice",
            method="GET",
            path="/buildings/a/dashboard",
            permission="dashboard:view",
            scope="building:a",
            route="/buildings/{building}/dashboard",
            roles=["user"],
            reasons=["role user via group staff"],
            latency_us=42,
            ref="r1",
            client="10.0.0.1",
            auth="session",
        ),
        decision_event(
            decision="deny",
            user="tom",
            method="GET",
            path="/invoices/7",
            permission="invoices:view",
            reasons=["no role grants invoices:view"],
            ref="r2",
            client="10.0.0.2",
        ),
        decision_event(
            decision="would-deny",
            user="tom",
            method="PUT",
            path="/buildings/a/documents/1",
            permission="documents:edit",
            scope="building:a",
            mode="log",
            ref="r3",
        ),
        request_event(
            user="alice",
            method="POST",
            path="/tasks/42/controls/1/perform",
            status=201,
            route="/tasks/{task}/controls/{control}/perform",
            upstream="app",
            latency_us=1800,
            ref="r4",
        ),
        admin_change_event(
            actor="carol",
            target="role:technician",
            action="update",
            before={"permissions": ["dashboard:view"]},
            after={"permissions": ["dashboard:view", "tasks:order"]},
            via="api",
        ),
        daypass_event(
            action="issue",
            pass_id="dp_1",
            user="carol",
            template="subcontractor",
            scope="building:a",
            holder={"name": "Sam", "company": "Fixit"},
            reason="boiler repair",
            expires_at=1.9e9,
        ),
        daypass_event(action="use", pass_id="dp_1", user="daypass:dp_1", method="GET", path="/buildings/a/dashboard"),
        sync_event(
            result="applied",
            mode="incremental",
            summary={"users_added": 1, "users_removed": 0},
            details={"added": ["uid=new,ou=people"]},
        ),
        signin_event(user="alice", method="oidc", session_id="h:abc", groups=["staff"]),
        signout_event(user="alice", reason="user", session_id="h:abc"),
    ]

"""What an access request tells whom: the webhook's events and the e-mails, sent in the background.

Events (webhook, one JSON POST each, see ``rolegate.notify.webhook`` for the signature):

* ``access_request.created`` — ``request`` (who, what in words, reason, wished duration, approvers closest
  scope first), ``notified`` (the approvers at the closest scope: the ones mailed) and ``review_url``;
* ``access_request.approved`` / ``.denied`` — the request with its answer (and the grant's ``until``);
* ``access_request.expired`` — nobody answered in time.

E-mail (when ``notify.email`` is set): a new request goes to the approvers at the closest scope (the
building's responsible, not every administrator); the answer goes to the requester. People without an
address in the directory are skipped. Nothing here waits for a receiver: deliveries run beside the
request (``Deliveries``, bounded) and their failures are WARNING lines.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from rolegate.admin.approvers import Approver
from rolegate.admin.wording import attempt_words, duration_words
from rolegate.display_time import display_zone, local_text
from rolegate.notify import Deliveries, Mailer, WebhookSender

log = logging.getLogger("rolegate.admin.requests")

DELIVERIES = Deliveries()
_ADDRESS = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+$")
_senders: list[Any] = [None, None, None]  # (notify config, webhook sender, mailer)


def _transport(notify_config: Any) -> tuple[WebhookSender | None, Mailer | None]:
    if _senders[0] is not notify_config:
        _senders[:] = [
            notify_config,
            WebhookSender(notify_config.webhook) if notify_config.webhook is not None else None,
            Mailer(notify_config.email) if notify_config.email is not None else None,
        ]
    return _senders[1], _senders[2]


def review_url(config: Any, key: str) -> str:
    return f"{config.server.public_url.rstrip('/')}/.rolegate/admin/requests/{key}"


def public(config: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """The request as receivers see it: no e-mail addresses, the words people read."""
    out = {
        k: doc.get(k)
        for k in (
            "id",
            "user",
            "name",
            "permission",
            "scope",
            "method",
            "path",
            "reason",
            "duration",
            "status",
            "created_at",
            "expires_at",
            "approvers",
            "decided_by",
            "decided_at",
            "answer",
            "grant",
        )
    }
    out["what"] = attempt_words(config, doc["permission"], doc.get("scope"))
    return out


def notify(runtime: Any, event: str, doc: dict[str, Any], approvers: list[Approver] | None = None) -> None:
    """Send what ``event`` says to whom it concerns, in the background; never raises."""
    try:
        section = runtime.config.access_requests
        webhook, mailer = _transport(section.notify)
        if webhook is None and mailer is None:
            return
        config = runtime.config
        notified = _closest(approvers or [])
        if webhook is not None:
            payload = {"request": public(config, doc), "review_url": review_url(config, doc["id"])}
            if event == "access_request.created":
                payload["notified"] = [a.username for a in notified]
            DELIVERIES.spawn(webhook.deliver(event, payload), f"webhook {event} {doc['id']}")
        if mailer is not None:
            for to, subject, text in _mails(config, event, doc, notified):
                DELIVERIES.spawn(mailer.send(to, subject, text), f"mail {event} {doc['id']}")
    except Exception as exc:  # noqa: BLE001 - telling people must never fail the answer itself
        log.warning("access request %s: could not notify (%s): %s: %s", doc.get("id"), event, type(exc).__name__, exc)


def _closest(approvers: list[Approver]) -> list[Approver]:
    """The approvers at the closest scope (the list is closest first)."""
    if not approvers:
        return []
    first = approvers[0].scope
    return [a for a in approvers if a.scope == first]


def _mails(config: Any, event: str, doc: dict[str, Any], approvers: list[Approver]) -> list[tuple[str, str, str]]:
    zone = display_zone(config)
    who = f"{doc.get('name') or doc['user']} ({doc['user']})"
    what = attempt_words(config, doc["permission"], doc.get("scope"))
    link = review_url(config, doc["id"])
    mails: list[tuple[str, str, str]] = []
    if event == "access_request.created":
        text = (
            f"{who} asks for access: {what}, for {duration_words(float(doc['duration']))}.\n\n"
            f"Reason: {doc['reason']}\n\n"
            f"Approve or deny it (you see what approving changes first):\n{link}\n\n"
            f"It expires unanswered on {local_text(doc['expires_at'], zone)}.\n"
        )
        for approver in approvers:
            if approver.email and _ADDRESS.match(approver.email):
                mails.append((approver.email, f"Access request: {who} - {what}", text))
    elif event in ("access_request.approved", "access_request.denied"):
        email = doc.get("email")
        if email and _ADDRESS.match(email):
            if event == "access_request.approved":
                until = (doc.get("grant") or {}).get("until")
                text = (
                    f"{doc.get('decided_by')} approved your request: {what}, until "
                    f"{local_text(until, zone, until=True)}.\nIt ends by itself then.\n"
                )
                subject = f"Access granted: {what}"
            else:
                text = f"{doc.get('decided_by')} denied your request: {what}.\n\nWhy: {doc.get('answer')}\n"
                subject = f"Access request denied: {what}"
            if doc.get("answer") and event == "access_request.approved":
                text += f"\nNote: {doc['answer']}\n"
            mails.append((email, subject, text + f"\n{link}\n"))
    return mails


__all__ = ["DELIVERIES", "notify", "public", "review_url"]

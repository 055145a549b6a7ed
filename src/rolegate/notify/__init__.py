"""Telling people outside rolegate that something needs them: signed webhooks and e-mail.

Transport only (what to say is the caller's): ``webhook`` posts signed JSON with bounded retries,
``email`` sends over SMTP, ``retry`` is the back-off both use, ``background`` keeps the deliveries
running beside the request that caused them (bounded in number).
"""

from rolegate.notify.background import Deliveries
from rolegate.notify.email import Mailer
from rolegate.notify.webhook import WebhookSender, sign

__all__ = ["Deliveries", "Mailer", "WebhookSender", "sign"]

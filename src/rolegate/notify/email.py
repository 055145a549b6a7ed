"""Plain-text mail over SMTP (stdlib ``smtplib`` in a thread: a slow relay never blocks the event loop)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from rolegate.config.sections.access_requests import EmailConfig
from rolegate.notify.retry import DeliveryFailed, with_retries

ATTEMPTS = 3
BACKOFF = 5.0


class Mailer:
    """Sends through one configured relay: ``security`` starttls (default), tls, or none (loopback only)."""

    def __init__(self, config: EmailConfig) -> None:
        self.config = config

    def message(self, to: str, subject: str, text: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.config.sender
        msg["To"] = to
        # One line, no header injection: names and reasons come from people.
        msg["Subject"] = " ".join(subject.split())[:200]
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=self.config.sender.rpartition("@")[2] or None)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text)
        return msg

    def _send_now(self, msg: EmailMessage) -> None:
        config = self.config
        timeout = config.timeout.total_seconds()
        try:
            if config.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    config.host, config.port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(config.host, config.port, timeout=timeout)
            with smtp:
                if config.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if config.username is not None and config.password is not None:
                    smtp.login(config.username, config.password.get_secret_value())
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryFailed(f"recipient refused: {', '.join(exc.recipients)}", retry=False) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryFailed(f"relay answered {exc.smtp_code}", retry=exc.smtp_code < 500) from None
        except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None

    async def send(self, to: str, subject: str, text: str) -> bool:
        """Send one mail (retried a few times); True when the relay accepted it."""
        msg = self.message(to, subject, text)

        async def attempt(n: int) -> None:
            await asyncio.to_thread(self._send_now, msg)

        return await with_retries(
            attempt, attempts=ATTEMPTS, backoff=BACKOFF, max_backoff=BACKOFF * 4, what=f"mail to {to}"
        )

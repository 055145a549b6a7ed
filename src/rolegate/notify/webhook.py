"""A signed JSON POST per event, retried with back-off.

Headers: ``X-Rolegate-Event`` (e.g. ``access_request.created``), ``X-Rolegate-Delivery`` (one id per
event, the same on every retry: receivers drop repeats), ``X-Rolegate-Timestamp`` (Unix seconds of this
attempt) and ``X-Rolegate-Signature: sha256=<hex>``, the HMAC-SHA256 under the shared secret of
``<timestamp>.<body bytes>``. A receiver recomputes it over the raw body, compares in constant time and
refuses a timestamp more than a few minutes old (a replayed call). A 2xx answer delivers; a timeout, a
connection error, 408, 429 or 5xx is retried; any other answer is a refusal and is not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import aiohttp

from rolegate.config.sections.access_requests import WebhookConfig
from rolegate.notify.retry import DeliveryFailed, with_retries

_RETRIED = frozenset({408, 425, 429})


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``timestamp.body``)."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Posts events to one configured URL."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self._secret = config.secret.get_secret_value().encode()

    async def deliver(self, event: str, payload: dict[str, Any]) -> bool:
        """Post ``payload`` (retried as configured); True once a 2xx answer came."""
        config = self.config
        body = json.dumps({"event": event, **payload}, ensure_ascii=False, separators=(",", ":"), default=str).encode()
        delivery = secrets.token_hex(12)
        timeout = aiohttp.ClientTimeout(total=config.timeout.total_seconds())

        async def attempt(n: int) -> None:
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "rolegate-webhook",
                "X-Rolegate-Event": event,
                "X-Rolegate-Delivery": delivery,
                "X-Rolegate-Timestamp": timestamp,
                "X-Rolegate-Signature": sign(self._secret, timestamp, body),
            }
            try:
                async with aiohttp.ClientSession(timeout=timeout) as http:
                    async with http.post(config.url, data=body, headers=headers, allow_redirects=False) as resp:
                        status = resp.status
                        await resp.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise DeliveryFailed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
            if 200 <= status < 300:
                return
            raise DeliveryFailed(f"answered {status}", retry=status >= 500 or status in _RETRIED)

        return await with_retries(
            attempt,
            attempts=config.attempts,
            backoff=config.backoff.total_seconds(),
            max_backoff=config.max_backoff.total_seconds(),
            what=f"webhook {event} (delivery {delivery})",
        )

"""Notification gateways: log (default), SMTP e-mail, HTTP SMS. Each raises GatewayError on failure."""

from __future__ import annotations

import asyncio
import hashlib
import re
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol

import aiohttp

from hq.settings import Settings

logger = logging.getLogger(__name__)


class GatewayError(Exception):
    """A send that did not (certainly) succeed; the dispatcher retries it later."""


@dataclass(frozen=True, slots=True)
class Message:
    idem_key: str
    channel: str  # "email" | "sms"
    recipient: str
    subject: str
    body: str


class Gateway(Protocol):
    async def send(self, message: Message) -> None: ...


_CODE_RE = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{4}-?[0-9A-HJKMNP-TV-Z]{4}\b")
_PHONE_RE = re.compile(r"\+?\d[\d ]{6,}\d")


def mask_recipient(recipient: str | None) -> str:
    """`+25078•••••56`, `a•••@example.org`: enough to tell messages apart, not to reach anyone."""
    if not recipient:
        return "-"
    if "@" in recipient:
        user, _, domain = recipient.partition("@")
        return f"{user[:1]}•••@{domain}"
    return recipient[:6] + "•" * max(0, len(recipient) - 8) + recipient[-2:]


def mask_text(text: str) -> str:
    """A message body for the log: booking codes and phone numbers blanked."""
    return _PHONE_RE.sub("•••", _CODE_RE.sub("••••-••••", text))


class LogGateway:
    """Writes notifications to the log: the safe default before real gateways are configured.
    It never writes a full phone number, e-mail address or booking code (logs are kept and
    copied far longer than personal data may be)."""

    async def send(self, message: Message) -> None:
        if logger.isEnabledFor(logging.INFO):  # the masking's regular expressions only for a line kept
            logger.info("notification %s via %s to %s: %s", message.idem_key, message.channel,
                        mask_recipient(message.recipient), mask_text(message.body))


def message_id(idem_key: str) -> str:
    return f"<{hashlib.sha256(idem_key.encode()).hexdigest()[:32]}@smartq.hq>"


class SmtpGateway:
    """smtplib in a worker thread (blocking I/O never on the loop); Message-ID from the idempotency key."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings

    def _send_blocking(self, message: Message) -> None:
        msg = EmailMessage()
        msg["From"] = self.s.smtp_from
        msg["To"] = message.recipient
        msg["Subject"] = message.subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = message_id(message.idem_key)
        msg["X-SmartQ-Idempotency-Key"] = message.idem_key
        msg.set_content(message.body)
        with smtplib.SMTP(self.s.smtp_host, self.s.smtp_port, timeout=self.s.smtp_timeout_s) as smtp:
            if self.s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.s.smtp_username:
                smtp.login(self.s.smtp_username, self.s.smtp_password)
            smtp.send_message(msg)

    async def send(self, message: Message) -> None:
        try:
            await asyncio.to_thread(self._send_blocking, message)
        except (smtplib.SMTPException, OSError) as err:
            raise GatewayError(f"smtp: {err}") from err


class HttpSmsGateway:
    """POST JSON {to, text, idempotency_key} to ``sms_url``; any 2xx is success."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.s, self.session = settings, session

    async def send(self, message: Message) -> None:
        headers = {"Idempotency-Key": message.idem_key}
        if self.s.sms_token:
            headers["Authorization"] = f"Bearer {self.s.sms_token}"
        payload = {"to": message.recipient, "text": message.body, "idempotency_key": message.idem_key}
        try:
            async with self.session.post(self.s.sms_url, json=payload, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=self.s.sms_timeout_s)) as resp:
                if resp.status // 100 != 2:
                    raise GatewayError(f"sms gateway answered {resp.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise GatewayError(f"sms gateway: {err!r}") from err

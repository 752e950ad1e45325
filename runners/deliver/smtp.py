"""The email of a payload and the SMTP client of `personalize deliver`.

    build_message(payload, cfg, date_ms) -> EmailMessage   multipart/alternative; Unsendable
                                                             if an id, address or header is bad
    SmtpSender(cfg).send(message, sender, recipient)       TransientSmtpError (retry later)
                                                             or PermanentSmtpError (5xx)
"""


from __future__ import annotations

import re
import smtplib
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from urllib.parse import quote

from pipelines.connections import smtp_connect, smtp_password
from transforms.model import EmailPayload
from transforms.settings import DeliverSettings

# Headers may run to RFC 5322's 998 characters: a long List-Unsubscribe URL has no space to
# fold at, and the default 78 makes the email package encode it (RFC 2047), which breaks it.
_POLICY = SMTP.clone(max_line_length=998)

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class Unsendable(ValueError):
    """The payload cannot become an email (bad id, address or header value)."""


def build_message(payload: EmailPayload, cfg: DeliverSettings, date_ms: int) -> EmailMessage:
    """The payload as a multipart/alternative email (text, then HTML).

    Message-ID is <message_id@deliver.message_id_domain>: stable across redeliveries, so a
    receiving system can drop repeats too. List-Unsubscribe carries the unsubscribe URL and
    List-Unsubscribe-Post marks it one-click (RFC 8058). Raises Unsendable.
    """
    mid = payload.message_id
    if not _SAFE_ID.match(mid):
        raise Unsendable("message_id is not a plain token")
    msg = EmailMessage(policy=_POLICY)
    part = "To"
    try:
        to = Address(display_name=payload.recipient_name or "", addr_spec=payload.recipient_email)
        headers = (
            ("Subject", payload.subject),
            ("From", cfg.sender),
            ("To", to),
            ("Date", formatdate(date_ms / 1000.0, usegmt=True)),
            ("Message-ID", f"<{mid}@{cfg.message_id_domain}>"),
            ("List-Unsubscribe", f"<{unsubscribe_url(payload, cfg)}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("X-Personalize-Campaign", payload.campaign),
            ("X-Personalize-Variant", payload.variant),
        )
        for part, value in headers:
            msg[part] = value
        part = "body"
        msg.set_content(payload.text)
        msg.add_alternative(payload.html, subtype="html")
    except (ValueError, TypeError, IndexError) as exc:  # email's header errors are ValueErrors
        # The exception's text may quote the value (an address): name the part only.
        raise Unsendable(f"unusable {part} ({type(exc).__name__})") from exc
    return msg


def unsubscribe_url(payload: EmailPayload, cfg: DeliverSettings) -> str:
    """deliver.unsubscribe_url_template with the payload's ids URL-quoted."""
    return cfg.unsubscribe_url_template.format(
        customer_id=quote(payload.customer_id, safe=""),
        message_id=quote(payload.message_id, safe=""),
        campaign=quote(payload.campaign, safe=""),
    )


class TransientSmtpError(Exception):
    """The server or the connection failed in a way worth retrying later."""


class PermanentSmtpError(Exception):
    """The server refused the message for good (5xx)."""


class SmtpSender:
    """One SMTP connection, opened on first use (TLS and AUTH as deliver.smtp_* say) and
    reopened after a failure."""

    def __init__(self, cfg: DeliverSettings) -> None:
        smtp_password(cfg)  # a bad security setting fails here, before anything is read
        self.cfg = cfg
        self._smtp: smtplib.SMTP | None = None

    def send(self, msg: EmailMessage, sender: str, recipient: str) -> None:
        """Send, reconnecting once if the kept connection went away; raises
        TransientSmtpError or PermanentSmtpError."""
        for attempt in (1, 2):
            try:
                if self._smtp is None:
                    self._smtp = smtp_connect(self.cfg, self.cfg.smtp_timeout / 1000.0)
                self._smtp.send_message(msg, from_addr=sender, to_addrs=[recipient])
                return
            except smtplib.SMTPServerDisconnected as exc:
                self._drop()
                if attempt == 2:
                    raise TransientSmtpError("disconnected") from exc
            except smtplib.SMTPRecipientsRefused as exc:
                codes = [code for code, _ in exc.recipients.values()]
                _raise_for(min(codes) if codes else 0, "recipient refused", exc)
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                _raise_for(exc.smtp_code, type(exc).__name__, exc)
            except smtplib.SMTPNotSupportedError as exc:
                raise PermanentSmtpError("not supported by the server (SMTPUTF8?)") from exc
            except (smtplib.SMTPException, OSError) as exc:
                # Server replies may quote the address: keep the code, not the text.
                self._drop()
                code = getattr(exc, "smtp_code", None) or getattr(exc, "errno", None)
                raise TransientSmtpError(f"{type(exc).__name__} {code or ''}".strip()) from exc

    def close(self) -> None:
        """QUIT, ignoring a connection that is already gone."""
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._smtp = None

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            except OSError:
                pass
            self._smtp = None


# Refusals of the session, not of the message (RFC 4954 / 3207: authentication required,
# authentication failed, encryption required): a settings problem, so retried, never dropped.
_SESSION_REFUSALS = {530, 535, 538}


def _raise_for(code: int, what: str, exc: Exception) -> None:
    if code in _SESSION_REFUSALS:
        raise TransientSmtpError(f"{what}: {code} (check the deliver.smtp_* security settings)"
                                 ) from exc
    if code >= 500:
        raise PermanentSmtpError(f"{what}: {code}") from exc
    raise TransientSmtpError(f"{what}: {code}") from exc

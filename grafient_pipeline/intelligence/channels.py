"""Alert channels: Slack incoming webhook, a signed JSON webhook, and email over SMTP.

`send` delivers one message with retries: a 429 waits for its Retry-After, 5xx answers,
timeouts and dropped connections back off exponentially. What retrying cannot fix (404, 401,
403, 410, a refused login or recipient, an unknown host) is permanent and reported as such.
Webhook URLs, signing secrets and SMTP passwords are secrets: no message here ever holds one
(hosts are named, never URLs).

The JSON webhook signs `<timestamp>.<body>` with HMAC-SHA256 under the shared secret; headers
`X-Grafient-Timestamp`, `X-Grafient-Signature: sha256=<hex>` and `X-Grafient-Alert-Key` (the
stable key receivers de-duplicate on). `verify_signature` is the receiver's side, with a
5-minute window against replay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid, parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from grafient_pipeline.intelligence.messages import AlertMessage
from grafient_pipeline.redact import scrub

KINDS = ("slack", "webhook", "email")
PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 413, 422}
SIGNATURE_HEADER = "X-Grafient-Signature"
TIMESTAMP_HEADER = "X-Grafient-Timestamp"
KEY_HEADER = "X-Grafient-Alert-Key"
REPLAY_WINDOW_S = 300
EMAIL = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+")


class ChannelError(ValueError):
    """A channel cannot be set up as given: one line saying what to fix (never a secret)."""


@dataclass(frozen=True)
class Channel:
    """A channel as delivery needs it: `settings` are public, `secrets` never leave memory."""

    name: str
    kind: str
    settings: Mapping[str, object]
    secrets: Mapping[str, str] = field(repr=False)

    def hidden(self, text: str) -> str:
        """`text` without any of this channel's secrets (nor OpenAI keys)."""
        for secret in self.secrets.values():
            if secret:
                text = text.replace(secret, "***")
        return scrub(text)


@dataclass(frozen=True)
class Delivery:
    ok: bool
    permanent: bool  # a failure retrying cannot fix: the channel needs the user
    detail: str
    attempts: int


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_s: float = 1.0  # 1, 2, 4 ... seconds between tries
    max_wait_s: float = 30.0  # a longer Retry-After: give up for now, the next round retries
    timeout_s: float = 10.0


# --- setting up ----------------------------------------------------------------------------


def check_url(url: str, *, https_only: bool = False) -> str:
    url = url.strip()
    parts = urlsplit(url)
    allowed = ("https",) if https_only else ("http", "https")
    if parts.scheme not in allowed or not parts.hostname or any(c.isspace() for c in url):
        need = "an https:// URL" if https_only else "an http:// or https:// URL"
        raise ChannelError(f"the webhook address is not {need}; paste it again")
    return url


def check_addresses(text: str, what: str) -> list[str]:
    addresses = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in addresses if not EMAIL.fullmatch(a)]
    if not addresses or bad:
        shown = f" ({bad[0]!r})" if bad else ""
        raise ChannelError(f"{what} needs email addresses like ops@example.com{shown}")
    return addresses


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ChannelError(
            f"--smtp wants HOST:PORT, for example smtp.example.com:587; got {text!r}"
        )
    return host.strip("[]"), int(port)


def describe(kind: str, settings: Mapping[str, object]) -> str:
    """Where a channel sends, for listings: hosts and addresses, never a URL or secret."""
    if kind == "email":
        return f"{settings['host']}:{settings['port']} -> {', '.join(settings['to'])}"  # type: ignore[arg-type]
    return f"{kind} to {settings.get('host', '?')}"


# --- sending -------------------------------------------------------------------------------


def send(
    channel: Channel,
    message: AlertMessage,
    policy: RetryPolicy | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    tls_context: ssl.SSLContext | None = None,
) -> Delivery:
    policy = policy or RetryPolicy()
    if channel.kind == "email":
        attempt = lambda: _send_email(channel, message, policy, tls_context)  # noqa: E731
    elif channel.kind in ("slack", "webhook"):
        attempt = lambda: _send_http(channel, message, policy)  # noqa: E731
    else:
        return Delivery(False, True, f"unknown channel kind {channel.kind!r}", 0)
    detail = ""
    for number in range(1, policy.attempts + 1):
        outcome = attempt()
        if outcome.ok or outcome.permanent:
            return Delivery(outcome.ok, outcome.permanent, channel.hidden(outcome.detail), number)
        detail = outcome.detail
        if number == policy.attempts:
            break
        wait = (
            outcome.wait_s if outcome.wait_s is not None else policy.backoff_s * 2 ** (number - 1)
        )
        if wait > policy.max_wait_s:
            detail += f"; asked to wait {wait:.0f} s, retrying later"
            return Delivery(False, False, channel.hidden(detail), number)
        sleep(wait)
    return Delivery(False, False, channel.hidden(detail), policy.attempts)


@dataclass(frozen=True)
class _Try:
    ok: bool
    permanent: bool
    detail: str
    wait_s: float | None = None


def _http_body(channel: Channel, message: AlertMessage, now: float) -> tuple[str, bytes, dict]:
    if channel.kind == "slack":
        body = json.dumps({"text": message.plain_text()}).encode()
        return channel.secrets["url"], body, {"Content-Type": "application/json"}
    payload = {
        "key": message.key,
        "kind": message.kind,
        "title": message.title,
        "text": message.text,
        "link": message.link,
        "data": message.data,
        "sent_at": int(now),
    }
    body = json.dumps(payload, sort_keys=True).encode()
    stamp = str(int(now))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: "sha256=" + sign(channel.secrets["secret"], stamp, body),
        KEY_HEADER: message.key,
        "Idempotency-Key": message.key,
    }
    return channel.secrets["url"], body, headers


def _send_http(channel: Channel, message: AlertMessage, policy: RetryPolicy) -> _Try:
    url, body, headers = _http_body(channel, message, time.time())
    host = urlsplit(url).hostname or "the webhook"
    try:
        with httpx.Client(timeout=policy.timeout_s, follow_redirects=False) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        return _Try(False, False, f"{host} did not answer within {policy.timeout_s:.0f} s")
    except (httpx.UnsupportedProtocol, httpx.InvalidURL):
        return _Try(False, True, f"the address of {host} is not a usable URL")
    except httpx.ConnectError as error:
        if isinstance(error.__cause__, socket.gaierror) or "Name or service" in str(error):
            return _Try(False, True, f"unknown host {host}")
        return _Try(False, False, f"cannot connect to {host}")
    except httpx.TransportError:
        return _Try(False, False, f"the connection to {host} failed")
    code = response.status_code
    if 200 <= code < 300:
        return _Try(True, False, f"HTTP {code} from {host}")
    detail = f"HTTP {code} from {host}" + _reason(channel, response)
    if code == 429:
        return _Try(False, False, detail, _retry_after(response.headers.get("Retry-After")))
    if code in PERMANENT_HTTP or (400 <= code < 500 and code != 408):
        return _Try(False, True, detail)
    return _Try(False, False, detail)


def _reason(channel: Channel, response: httpx.Response) -> str:
    """Slack answers a one-word reason (`no_service`, `invalid_token`): worth showing."""
    if channel.kind != "slack":
        return ""
    word = response.text.strip()[:40]
    return f" ({word})" if re.fullmatch(r"[a-z_]+", word) else ""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str, timestamp: str, body: bytes, header: str, now: float | None = None
) -> bool:
    """The receiver's check: a valid signature on a timestamp at most 5 minutes away."""
    try:
        stamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > REPLAY_WINDOW_S:
        return False
    expected = "sha256=" + sign(secret, timestamp, body)
    return hmac.compare_digest(expected, header or "")


def _email(channel: Channel, message: AlertMessage) -> EmailMessage:
    email = EmailMessage()
    email["Subject"] = message.title
    email["From"] = str(channel.settings["from"])
    email["To"] = ", ".join(channel.settings["to"])  # type: ignore[arg-type]
    email["Message-ID"] = make_msgid(domain="grafient.local")
    email[KEY_HEADER] = message.key
    email.set_content(message.plain_text())
    return email


def _send_email(
    channel: Channel,
    message: AlertMessage,
    policy: RetryPolicy,
    tls_context: ssl.SSLContext | None,
) -> _Try:
    host, port = str(channel.settings["host"]), int(channel.settings["port"])  # type: ignore[call-overload]
    context = tls_context or ssl.create_default_context()
    user, password = channel.settings.get("user"), channel.secrets.get("password")
    try:
        if port == 465:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port, timeout=policy.timeout_s, context=context
            )
        else:
            smtp = smtplib.SMTP(host, port, timeout=policy.timeout_s)
        with smtp:
            smtp.ehlo()
            if port != 465:
                smtp.starttls(context=context)
                smtp.ehlo()
            if user:
                try:
                    smtp.login(str(user), password or "")
                except smtplib.SMTPServerDisconnected:  # some servers hang up on a bad login
                    raise smtplib.SMTPAuthenticationError(535, b"disconnected") from None
            smtp.send_message(_email(channel, message))
    except smtplib.SMTPAuthenticationError:
        return _Try(False, True, f"{host} refused the login for {user}")
    except smtplib.SMTPNotSupportedError:
        return _Try(False, True, f"{host} does not offer STARTTLS (or login)")
    except smtplib.SMTPRecipientsRefused as error:
        return _Try(False, True, f"{host} refused the recipient(s) {', '.join(error.recipients)}")
    except smtplib.SMTPSenderRefused:
        return _Try(False, True, f"{host} refused the sender {channel.settings['from']}")
    except smtplib.SMTPResponseException as error:
        permanent = 500 <= error.smtp_code < 600
        return _Try(False, permanent, f"{host} answered {error.smtp_code}")
    except ssl.SSLCertVerificationError:
        return _Try(False, True, f"{host}'s TLS certificate is not trusted")
    except socket.gaierror:
        return _Try(False, True, f"unknown host {host}")
    except TimeoutError:
        return _Try(False, False, f"{host} did not answer within {policy.timeout_s:.0f} s")
    except (smtplib.SMTPException, OSError) as error:
        return _Try(
            False, False, f"the connection to {host}:{port} failed ({type(error).__name__})"
        )
    return _Try(True, False, f"{host} accepted the email")

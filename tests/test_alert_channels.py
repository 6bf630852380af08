"""Issue 16: alert delivery over real connections: Slack and the signed webhook against a local
HTTP capture server (429 with Retry-After, 500s, a timeout, a 404), email against a real SMTP
server (aiosmtpd) with STARTTLS and login, on a self-signed certificate made here."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from grafient_pipeline.intelligence.channels import (
    KEY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Channel,
    RetryPolicy,
    send,
    verify_signature,
)
from grafient_pipeline.intelligence.messages import AlertMessage

MESSAGE = AlertMessage(
    key="budget:1:2026-11:80",
    kind="budget_threshold",
    title="Budget 'research' passed 80% for 2026-11",
    text="Spend reached $800.00 (80.0%) of budget 'research'.",
    link="http://127.0.0.1:3000/assets/budget_status",
)
SECRET = "whsec-0123456789abcdef-shared"
FAST = RetryPolicy(attempts=4, backoff_s=0.01, max_wait_s=5, timeout_s=0.5)


class Capture(ThreadingHTTPServer):
    """Answers each POST with the next scripted (status, headers, delay); records requests."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[tuple[int, dict[str, str], float]] = []
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Capture

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append((self.path, dict(self.headers), body))
        status, headers, delay = self.server.script.pop(0) if self.server.script else (200, {}, 0)
        time.sleep(delay)
        payload = b"no_service" if status == 404 else b"ok"
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (the timeout case)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[Capture]:
    server = Capture()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def slack(capture: Capture) -> Channel:
    return Channel(
        "ops", "slack", {"host": "127.0.0.1"}, {"url": capture.url + "/services/T0/B0/x"}
    )


def webhook(capture: Capture) -> Channel:
    return Channel("hook", "webhook", {"host": "127.0.0.1"},
                   {"url": capture.url + "/hook", "secret": SECRET})  # fmt: skip


def test_slack_delivers_the_text_with_its_key(capture: Capture):
    delivery = send(slack(capture), MESSAGE, FAST)

    assert delivery.ok and delivery.attempts == 1
    (path, _headers, body) = capture.requests[0]
    assert path == "/services/T0/B0/x"
    text = json.loads(body)["text"]
    assert MESSAGE.title in text and "(alert key: budget:1:2026-11:80)" in text


def test_webhook_is_signed_over_timestamp_and_body(capture: Capture):
    assert send(webhook(capture), MESSAGE, FAST).ok

    (_path, headers, body) = capture.requests[0]
    stamp, signature = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert headers[KEY_HEADER] == MESSAGE.key
    assert verify_signature(SECRET, stamp, body, signature)
    assert not verify_signature("another-secret", stamp, body, signature)
    assert not verify_signature(SECRET, stamp, body + b" ", signature)  # tampered body
    assert not verify_signature(SECRET, stamp, body, signature, now=int(stamp) + 301)  # replay
    assert json.loads(body)["key"] == MESSAGE.key


def test_429_waits_for_retry_after_then_delivers(capture: Capture):
    capture.script = [(429, {"Retry-After": "2"}, 0), (200, {}, 0)]
    waits: list[float] = []

    delivery = send(webhook(capture), MESSAGE, FAST, sleep=waits.append)

    assert delivery.ok and delivery.attempts == 2
    assert waits == [2.0]
    assert len(capture.requests) == 2
    assert capture.requests[0][1][KEY_HEADER] == capture.requests[1][1][KEY_HEADER]


def test_500s_back_off_exponentially(capture: Capture):
    capture.script = [(500, {}, 0), (502, {}, 0), (503, {}, 0), (200, {}, 0)]
    waits: list[float] = []

    delivery = send(slack(capture), MESSAGE, FAST, sleep=waits.append)

    assert delivery.ok and delivery.attempts == 4
    assert waits == [0.01, 0.02, 0.04]


def test_a_timeout_is_retried(capture: Capture):
    capture.script = [(200, {}, 1.5), (200, {}, 0)]

    delivery = send(webhook(capture), MESSAGE, FAST, sleep=lambda s: None)

    assert delivery.ok and delivery.attempts == 2


def test_persistent_5xx_stays_transient(capture: Capture):
    capture.script = [(500, {}, 0)] * 4
    delivery = send(webhook(capture), MESSAGE, FAST, sleep=lambda s: None)
    assert not delivery.ok and not delivery.permanent
    assert "HTTP 500" in delivery.detail and delivery.attempts == 4


def test_a_long_retry_after_is_left_for_the_next_round(capture: Capture):
    capture.script = [(429, {"Retry-After": "600"}, 0)]
    delivery = send(webhook(capture), MESSAGE, FAST, sleep=lambda s: pytest.fail("slept"))
    assert not delivery.ok and not delivery.permanent and "retrying later" in delivery.detail


@pytest.mark.parametrize("status", [404, 401, 403, 410])
def test_4xx_is_permanent_and_names_no_secret(capture: Capture, status: int):
    capture.script = [(status, {}, 0)]
    channel = slack(capture)

    delivery = send(channel, MESSAGE, FAST, sleep=lambda s: pytest.fail("retried"))

    assert not delivery.ok and delivery.permanent and delivery.attempts == 1
    assert f"HTTP {status} from 127.0.0.1" in delivery.detail
    assert "/services/" not in delivery.detail and channel.secrets["url"] not in delivery.detail
    if status == 404:
        assert "no_service" in delivery.detail


def test_nothing_listening_is_transient_and_a_bad_host_is_permanent():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = Channel("x", "webhook", {}, {"url": f"http://127.0.0.1:{port}/", "secret": "s"})
    refused = send(closed, MESSAGE, FAST, sleep=lambda s: None)
    assert not refused.ok and not refused.permanent
    unknown = Channel("x", "webhook", {}, {"url": "http://no-such-host.invalid/", "secret": "s"})
    assert send(unknown, MESSAGE, FAST, sleep=lambda s: None).permanent


# --- SMTP with STARTTLS -----------------------------------------------------------------------

SMTP_USER, SMTP_PASSWORD = "alerts", "smtp-pass-Vq83kdP0zx1"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not address.endswith("@example.com"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(),
        auth_data.password.decode(),
    ) == (SMTP_USER, SMTP_PASSWORD)
    return AuthResult(success=ok)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[int, Inbox, ssl.SSLContext]]:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inbox = Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, tls_context=server_context,
        require_starttls=True, authenticator=_authenticate, auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    yield port, inbox, ssl.create_default_context(cafile=str(cert))
    controller.stop()


def email_channel(port: int, password: str = SMTP_PASSWORD, to: str = "ops@example.com"):
    settings = {"host": "127.0.0.1", "port": port, "from": "grafient@example.com", "to": [to],
                "user": SMTP_USER}  # fmt: skip
    return Channel("mail", "email", settings, {"password": password})


def test_email_over_starttls_with_login(smtp):
    port, inbox, trust = smtp

    delivery = send(email_channel(port), MESSAGE, FAST, tls_context=trust)

    assert delivery.ok, delivery.detail
    ((sender, recipients, content),) = inbox.messages
    assert (sender, recipients) == ("grafient@example.com", ["ops@example.com"])
    assert b"Subject: Budget 'research' passed 80% for 2026-11" in content
    assert f"{KEY_HEADER}: {MESSAGE.key}".encode() in content


def test_email_wrong_password_is_permanent_and_secret_free(smtp):
    port, inbox, trust = smtp
    delivery = send(email_channel(port, "wrong-pass-123456"), MESSAGE, FAST, tls_context=trust)
    assert not delivery.ok and delivery.permanent
    assert "refused the login" in delivery.detail and "wrong-pass" not in delivery.detail
    assert inbox.messages == []


def test_email_bad_recipient_is_permanent(smtp):
    port, _inbox, trust = smtp
    channel = email_channel(port, to="someone@elsewhere.org")
    delivery = send(channel, MESSAGE, FAST, tls_context=trust)
    assert delivery.permanent and "someone@elsewhere.org" in delivery.detail


def test_email_untrusted_certificate_is_permanent(smtp):
    port, _inbox, _trust = smtp
    delivery = send(email_channel(port), MESSAGE, FAST)  # the system CAs do not know it
    assert delivery.permanent and "certificate" in delivery.detail

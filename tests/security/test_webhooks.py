"""Team webhooks obey the instances' target rules, on the resolved address, without redirects (#14, item 7).

Only loopback is ever dialled here: every refused address is refused before any connection, and
names that must resolve elsewhere do so through portal.outbound.resolve, patched at that boundary.
"""

from __future__ import annotations

import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from audit.models import AuditEvent, AuditHead
from portal import outbound
from portal.models import ChangeRequest, Instance, Team
from portal.services.notifications import notify_send

METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://169.254.10.20/",  # any link-local address
    "http://[fe80::1]/",
    "http://[::ffff:169.254.169.254]/",  # the metadata address written as IPv4-mapped IPv6
]
# An allow-list as wide as an operator could make it: the metadata and link-local refusals hold anyway.
EVERYTHING = ["0.0.0.0/0", "::/0", "metadata.google.internal"]


class Recorder:
    """A loopback HTTP server answering every POST with `status` (and `location`), recording each one."""

    def __init__(self, status: int = 204, location: str = "") -> None:
        self.received: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                recorder.received.append({"path": self.path, "host": self.headers["Host"],
                                          "body": json.loads(self.rfile.read(length) or b"null")})
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def team_request(people) -> ChangeRequest:
    """An approved request of team payments (rows only: a webhook needs no cluster)."""
    instance = Instance.objects.create(name="hooks-target", host="127.0.0.1", port=1, admin_user="nobody")
    return ChangeRequest.objects.create(
        type="schema", instance=instance, team=Team.objects.get(name="payments"), requester=people["alice"],
        justification="webhook", payload={"database": "app", "name": "hooks"}, plan=[], plan_hash="0" * 64,
        status="approved")


def _events_since(seq: int, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(seq__gt=seq, action=action).order_by("seq"))


def _head() -> int:
    return AuditHead.objects.get(pk=1).seq


def _set_webhook(url: str) -> None:
    # A row as an older portal may have stored it, before URLs were checked when saved.
    Team.objects.filter(name="payments").update(webhook_url=url)


# --- when saved -----------------------------------------------------------------------------

@pytest.mark.parametrize("url", METADATA_URLS)
def test_a_metadata_or_link_local_webhook_is_refused_when_saved_even_if_every_address_is_allowed(
        people, web_for, settings, url):
    # given an operator who allowed every address (and the metadata host by name)
    settings.ALLOWED_TARGETS = EVERYTHING
    # when the admin creates a team whose webhook is the cloud metadata service
    response = web_for("admin").post("/teams/", {"name": "exfil", "webhook_url": url})
    # then the form comes back, a 400 naming the webhook field, and no team exists
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="id_webhook_url_error"' in html, html
    assert "never calls it" in html
    assert not Team.objects.filter(name="exfil").exists()


def test_a_webhook_outside_the_allowed_targets_is_refused_when_saved(people, web_for):
    # given the default targets (loopback only)
    # when the admin saves a webhook on a private address outside them
    response = web_for("admin").post("/teams/", {"name": "far", "webhook_url": "http://10.1.2.3/hook"})
    # then the webhook field says which rule refused it
    assert response.status_code == 400
    assert "PORTAL_ALLOWED_TARGETS" in response.content.decode()
    assert not Team.objects.filter(name="far").exists()


def test_a_name_that_resolves_to_the_metadata_address_is_refused_when_saved(people, web_for, settings, monkeypatch):
    # given a host name whose DNS answers the metadata address, and a wide allow-list
    settings.ALLOWED_TARGETS = EVERYTHING
    monkeypatch.setattr(outbound, "resolve", lambda host, port: [outbound.ipaddress.ip_address("169.254.169.254")])
    # when the admin saves it as a webhook
    response = web_for("admin").post("/teams/", {"name": "sneaky", "webhook_url": "https://hooks.example.test/x"})
    # then it is refused by the address it resolves to
    assert response.status_code == 400
    assert "hooks.example.test resolves to 169.254.169.254" in response.content.decode()


@pytest.mark.parametrize("url", ["http://localhost:8080/hook", "http://127.0.0.1:9/hook", "http://[::1]:9/x"])
def test_a_loopback_webhook_is_accepted_when_saved(people, web_for, url):
    response = web_for("admin").post("/teams/", {"name": "near", "webhook_url": url})
    assert response.status_code == 302
    assert Team.objects.get(name="near").webhook_url == url


def test_an_international_host_name_is_checked_in_its_dns_form(team_request, monkeypatch):
    asked: list[str] = []

    def resolver(host: str, port: int) -> list:
        asked.append(host)
        return [outbound.ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(outbound, "resolve", resolver)
    with Recorder() as receiver:
        _set_webhook(f"http://bücher.example.test:{receiver.port}/hook")
        assert notify_send(team_request.pk, "approved")["webhook"] == "204"
    assert asked == ["xn--bcher-kva.example.test"]
    assert receiver.received[0]["host"] == f"xn--bcher-kva.example.test:{receiver.port}"


def test_a_webhook_with_credentials_in_the_url_is_refused(people, web_for):
    response = web_for("admin").post("/teams/", {"name": "creds", "webhook_url": "http://user:pw@127.0.0.1/hook"})
    assert response.status_code == 400
    assert "user name or password" in response.content.decode()


# --- when sent ------------------------------------------------------------------------------

def test_a_redirect_is_a_failed_delivery_and_is_not_followed(team_request):
    # given a permitted webhook that redirects to another server (one the rules would even allow)
    with Recorder() as elsewhere, Recorder(status=302, location=elsewhere.url) as redirector:
        _set_webhook(redirector.url + "?token=s3cret")
        start = _head()
        # when the portal sends a notification
        sent = notify_send(team_request.pk, "approved")
        # then the redirecting server got the POST, the server it pointed at got nothing
        assert len(redirector.received) == 1
        assert elsewhere.received == []
    # and the delivery failed, with an audit event saying why (never the URL's token)
    assert sent["webhook"].startswith("failed: answered a redirect (HTTP 302)")
    [event] = _events_since(start, "notify.webhook_failed")
    assert event.outcome == "failed" and event.request_id == team_request.pk
    assert event.details["status"] == 302 and "redirects are not followed" in event.details["reason"]
    assert event.details["target"] == f"http://127.0.0.1:{redirector.port}"
    assert "s3cret" not in json.dumps(event.details)


@pytest.mark.parametrize("url", [*METADATA_URLS[:4],
                                 "http://2852039166/latest/meta-data/",  # 169.254.169.254 as one number
                                 "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/"])  # and through NAT64
def test_a_stored_metadata_webhook_is_refused_at_send_and_audited(team_request, settings, url):
    # given a metadata webhook stored before the save check existed, and a wide allow-list
    settings.ALLOWED_TARGETS = EVERYTHING
    _set_webhook(url)
    start = _head()
    # when the portal sends a notification
    sent = notify_send(team_request.pk, "approved")
    # then nothing was sent, and the refusal is audited with its reason
    assert sent["webhook"] == "not allowed"
    [event] = _events_since(start, "notify.webhook_refused")
    assert event.outcome == "failed" and event.object_type == "team"
    assert "never calls it" in event.details["reason"]
    assert event.details["address"] == ""  # refused before any connection


def test_a_webhook_answering_an_error_is_an_audited_failure(team_request):
    with Recorder(status=500) as failing:
        _set_webhook(failing.url)
        start = _head()
        sent = notify_send(team_request.pk, "approved")
    assert sent["webhook"] == "failed: answered HTTP 500"
    [event] = _events_since(start, "notify.webhook_failed")
    assert event.details["status"] == 500


def test_a_delivered_webhook_records_no_failure(team_request):
    with Recorder() as receiver:
        _set_webhook(receiver.url)
        start = _head()
        sent = notify_send(team_request.pk, "approved")
    assert sent["webhook"] == "204"
    assert receiver.received[0]["body"]["event"] == "request.approved"
    assert not AuditEvent.objects.filter(seq__gt=start, action__startswith="notify.").exists()


# --- DNS rebinding -----------------------------------------------------------------------------

class RebindingResolver:
    """A DNS that answers loopback first and the metadata address to every later question."""

    def __init__(self) -> None:
        self.questions: list[str] = []

    def __call__(self, host: str, port: int) -> list:
        self.questions.append(host)
        answer = "127.0.0.1" if len(self.questions) == 1 else "169.254.169.254"
        return [outbound.ipaddress.ip_address(answer)]


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_dialled(team_request, monkeypatch):
    # given a host name whose DNS rebinds to the metadata address after its first answer
    resolver = RebindingResolver()
    monkeypatch.setattr(outbound, "resolve", resolver)
    with Recorder() as receiver:
        _set_webhook(f"http://hooks.rebind.test:{receiver.port}/hook")
        # when the portal sends a notification
        sent = notify_send(team_request.pk, "approved")
    # then it asked once, checked that answer and connected to it, with the name in the Host header
    assert resolver.questions == ["hooks.rebind.test"]
    assert sent["webhook"] == "204"
    assert receiver.received[0]["host"] == f"hooks.rebind.test:{receiver.port}"


def test_one_refused_address_among_the_answers_refuses_the_webhook(team_request, monkeypatch):
    # given a name that resolves to loopback and to the metadata address
    both = [outbound.ipaddress.ip_address("127.0.0.1"), outbound.ipaddress.ip_address("169.254.169.254")]
    monkeypatch.setattr(outbound, "resolve", lambda host, port: both)
    with Recorder() as receiver:
        _set_webhook(f"http://hooks.split.test:{receiver.port}/hook")
        sent = notify_send(team_request.pk, "approved")
        # then nothing is sent to either: which address a client would pick is not ours to bet on
        assert receiver.received == []
    assert sent["webhook"] == "not allowed"


def test_a_name_resolving_outside_the_allowed_targets_is_refused_at_send(team_request, monkeypatch):
    monkeypatch.setattr(outbound, "resolve", lambda host, port: [outbound.ipaddress.ip_address("203.0.113.9")])
    _set_webhook("https://hooks.example.test/hook")
    start = _head()
    assert notify_send(team_request.pk, "approved")["webhook"] == "not allowed"
    [event] = _events_since(start, "notify.webhook_refused")
    assert "outside PORTAL_ALLOWED_TARGETS" in event.details["reason"]


# --- TLS keeps the name ------------------------------------------------------------------------

@pytest.fixture
def tls_receiver(tmp_path, monkeypatch) -> Iterator[dict]:
    """An HTTPS server on 127.0.0.1 with a certificate for hooks.tls.test only, trusted via SSL_CERT_FILE;
    it records the SNI name each client sent."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.tls.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.tls.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))  # read by ssl.create_default_context()
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    context.sni_callback = lambda sock, server_name, ctx: server_names.append(server_name)
    receiver = Recorder()
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    with receiver:
        yield {"port": receiver.port, "received": receiver.received, "server_names": server_names}


def test_https_to_the_checked_address_keeps_the_name_for_sni_and_the_certificate(team_request, monkeypatch,
                                                                                   tls_receiver):
    # given hooks.tls.test resolving to loopback, served with a certificate for that name only
    monkeypatch.setattr(outbound, "resolve", lambda host, port: [outbound.ipaddress.ip_address("127.0.0.1")])
    _set_webhook(f"https://hooks.tls.test:{tls_receiver['port']}/hook")
    # when the portal sends a notification
    sent = notify_send(team_request.pk, "approved")
    # then TLS named the host (SNI), the certificate matched it, and the Host header carries it too
    assert sent["webhook"] == "204", sent
    assert tls_receiver["server_names"] == ["hooks.tls.test"]
    assert tls_receiver["received"][0]["host"] == f"hooks.tls.test:{tls_receiver['port']}"

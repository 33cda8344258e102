"""The transports that deliver audit events to SIEM collectors: what goes on the wire and what counts
as an acknowledgement. audit/siem.py (the forwarder) reads the log, keeps the cursors and calls
`send` with a gap-free batch; a batch not acknowledged raises DeliveryFailed.

Two collectors, each configured from the environment (portal/conf.py, PORTAL_SIEM_*):

- `syslog`: RFC 5424 messages over TCP with octet-counting framing (RFC 6587 3.4.1), in TLS when the
  URL is `tcp+tls://` (the collector's certificate must chain to PORTAL_SIEM_SYSLOG_CA_FILE, or the
  system's CAs, and name the URL's host). Facility 13 ("log audit"); structured data
  `[audit@32473 seq= hash= prev_hash= action= actor= outcome= object=]` and the whole event as JSON
  in MSG. One connection per batch: the frames are written, the portal half-closes (FIN) and waits
  for the collector to close its side. A collector that dies before reading resets the connection
  and the batch is sent again; a clean close (or no reset within the timeout once every byte was
  written) acknowledges it. Plain syslog has no application acknowledgement: that is the strongest
  one TCP gives, and it says the collector read the frames, not that it kept them (one killed
  after reading closes cleanly): the forwarder sends the last batch again on the first failure
  after it, so a collector's crash duplicates at most a batch and loses none.
- `https`: the events as JSON lines (`application/x-ndjson`), one POST per batch, with
  `Authorization: Bearer PORTAL_SIEM_HTTPS_TOKEN`, the certificate checked against
  PORTAL_SIEM_HTTPS_CA_FILE (or the system's CAs). A 2xx acknowledges the batch; anything else,
  a redirect included, is a failure.

Both go through the outbound rules (portal/outbound.py, portal/targets.py): the host is resolved
once, every address must be inside PORTAL_ALLOWED_TARGETS and none link-local or metadata, and
the connection goes to an address that was checked.
"""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import structlog
from django.conf import settings

from audit.outcomes import is_failure
from portal import outbound

log = structlog.get_logger(__name__)

# RFC 5424: facility 13 is "log audit"; severity 5 (notice) for an event that went through,
# 4 (warning) for a refusal or failure, so a collector's filters can tell them apart.
FACILITY = 13
# The SD-ID of our structured data: name@<private enterprise number>. 32473 is the number RFC 5612
# reserves for documentation and examples; operators filter on "audit@32473".
SD_ID = "audit@32473"
APP_NAME = "dbportal"


class DeliveryFailed(Exception):
    """A batch was not acknowledged; `reason` is fit for the admin page and an audit event (no secret)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason[:500]
        super().__init__(self.reason)


# --- one event ------------------------------------------------------------------------------------

def _ts_text(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_json(event: dict[str, Any]) -> str:
    """One event as a JSON object on one line (the JSON Lines export's fields, `ts` in UTC)."""
    body = dict(event)
    body["ts"] = _ts_text(event["ts"])
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=False)


# --- RFC 5424 -------------------------------------------------------------------------------------

def _printable_ascii(text: str, limit: int) -> str:
    """RFC 5424 header fields: printable US-ASCII (33-126), bounded; "-" when nothing is left."""
    cleaned = "".join(ch for ch in text if 33 <= ord(ch) <= 126)[:limit]
    return cleaned or "-"


def _sd_value(value: Any) -> str:
    """An SD-PARAM value: UTF-8 with `"`, `\\` and `]` escaped (RFC 5424 6.3.3)."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(event: dict[str, Any], *, hostname: str) -> bytes:
    """The RFC 5424 SYSLOG-MSG of one event (without the octet count)."""
    severity = 4 if is_failure(event["outcome"]) else 5  # warning for a failure (audit.outcomes)
    obj = f"{event['object_type']}:{event['object_id']}" if event["object_type"] else ""
    params = {"seq": event["seq"], "hash": event["hash"], "prev_hash": event["prev_hash"],
              "action": event["action"], "actor": event["actor"], "outcome": event["outcome"], "object": obj}
    data = " ".join(f'{name}="{_sd_value(value)}"' for name, value in params.items())
    header = (f"<{FACILITY * 8 + severity}>1 {_ts_text(event['ts'])} {_printable_ascii(hostname, 255)} "
              f"{APP_NAME} - {_printable_ascii(event['action'], 32)} [{SD_ID} {data}] ")
    # MSG is UTF-8, announced by the BOM (RFC 5424 6.4).
    return header.encode() + b"\xef\xbb\xbf" + event_json(event).encode()


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: `MSG-LEN SP SYSLOG-MSG`."""
    return str(len(message)).encode() + b" " + message


# --- collectors -----------------------------------------------------------------------------------

def _tls_context(ca_file: Any) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryFailed(f"the CA file cannot be read ({type(exc).__name__})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class SyslogCollector:
    host: str
    port: int
    tls: bool
    ca_file: Any = None
    name: str = "syslog"
    # A close acknowledges that the collector read the batch, not that it stored it: one that dies
    # between the two has closed cleanly (the kernel's FIN), so the forwarder sends the last batch
    # again on the first failure after it (audit/siem.py).
    acknowledges_storage: ClassVar[bool] = False

    @classmethod
    def from_url(cls, url: str, ca_file: Any) -> SyslogCollector:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        return cls(host=host, port=int(parts.port or 0), tls=parts.scheme == "tcp+tls", ca_file=ca_file)

    @property
    def destination(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tcp+tls' if self.tls else 'tcp'}://{host}:{self.port}"

    def send(self, events: list[dict[str, Any]], *, timeout: float) -> None:
        try:
            addresses = outbound.checked_addresses(outbound.Target("tcp", self.host, self.port, ""))
        except outbound.TargetRefused as exc:
            raise DeliveryFailed(f"refused: {exc.reason}") from None
        hostname = socket.gethostname()
        payload = b"".join(octet_frame(syslog_message(event, hostname=hostname)) for event in events)
        context = _tls_context(self.ca_file) if self.tls else None
        failure = "no address answered"
        for address in addresses:  # each one checked; the next is tried only if connecting fails
            try:
                raw = socket.create_connection((str(address), self.port), timeout)
            except OSError as exc:
                failure = f"could not connect to {address}: {type(exc).__name__}"
                continue
            try:
                self._deliver(raw, payload, context, timeout)
                return
            except ssl.SSLCertVerificationError as exc:
                raise DeliveryFailed(f"certificate of {address} refused: {exc.verify_message}") from None
            except (OSError, ssl.SSLError) as exc:
                raise DeliveryFailed(f"{type(exc).__name__} from {address}") from None
            finally:
                raw.close()
        raise DeliveryFailed(failure)

    def _deliver(self, raw: socket.socket, payload: bytes, context: ssl.SSLContext | None, timeout: float) -> None:
        sock = context.wrap_socket(raw, server_hostname=self.host) if context is not None else raw
        try:
            sock.settimeout(timeout)
            sock.sendall(payload)
            # The acknowledgement: half-close, then read until the collector closes its side. A reset
            # here means it died with our frames unread (the batch is sent again).
            sock.shutdown(socket.SHUT_WR)  # on a TLS socket: the TCP FIN, no close_notify to wait for
            try:
                while sock.recv(4096):
                    pass
            except TimeoutError:
                # Every byte was written and nothing was reset: the collector keeps the connection
                # open rather than closing it. That is all plain syslog can tell us.
                log.info("siem.syslog_no_close", collector=self.name)
        finally:
            if sock is not raw:
                sock.close()


@dataclass(frozen=True)
class HttpsCollector:
    url: str
    token: str = ""
    ca_file: Any = None
    name: str = "https"
    acknowledges_storage: ClassVar[bool] = True  # the collector answers 2xx once it has the batch

    @property
    def destination(self) -> str:
        try:
            return outbound.parse_target(self.url).display  # never the path (it may hold a token)
        except outbound.TargetRefused:
            return "https://(invalid)"

    def send(self, events: list[dict[str, Any]], *, timeout: float) -> None:
        body = "".join(event_json(event) + "\n" for event in events).encode()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        delivery = outbound.post(self.url, body, content_type="application/x-ndjson", timeout=timeout,
                                 headers=headers, context=_tls_context(self.ca_file))
        if delivery.outcome != "delivered":
            prefix = "refused: " if delivery.outcome == "refused" else ""
            raise DeliveryFailed(prefix + delivery.reason)


Collector = SyslogCollector | HttpsCollector


def configured_collectors() -> dict[str, Collector]:
    """The collectors the environment configures now, by name."""
    collectors: dict[str, Collector] = {}
    if settings.SIEM_SYSLOG:
        collectors["syslog"] = SyslogCollector.from_url(settings.SIEM_SYSLOG, settings.SIEM_SYSLOG_CA_FILE)
    if settings.SIEM_HTTPS_URL:
        collectors["https"] = HttpsCollector(url=settings.SIEM_HTTPS_URL, token=settings.SIEM_HTTPS_TOKEN,
                                             ca_file=settings.SIEM_HTTPS_CA_FILE)
    return collectors

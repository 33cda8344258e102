"""Outbound HTTP the portal makes to addresses users chose: team webhooks (and any later integration).

The target rules are the instances' (PORTAL_ALLOWED_TARGETS, `portal.services.instances.target_allowed`),
applied to every address the URL's host resolves to, not to the name alone: a name an attacker's
DNS answers for could otherwise point the portal anywhere. Link-local and cloud metadata
addresses are refused whatever the list says (a wide list such as 0.0.0.0/0 must not open the
metadata service and its credentials). A send resolves once, checks every address, and connects
to an address it checked, never looking the name up again (a rebinding DNS server gets no second
answer); the URL's host stays in the Host header and in TLS (SNI and certificate checks).
Redirects are never followed: a 3xx is a failed delivery, so a permitted server cannot bounce the
portal to a refused one.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from portal.targets import ALWAYS_REFUSED_NAMES, IPAddress, refused_kind, target_allowed

SCHEMES = {"http": 80, "https": 443}


class TargetRefused(Exception):
    """The URL may not be called; `reason` says why in words fit for a form or an audit event."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as in the URL (a name, or an IP without brackets)
    port: int
    path: str  # path and query, what goes on the request line

    @property
    def display(self) -> str:
        """scheme://host:port, without the path: webhook paths often hold a secret token."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class Delivery:
    """What one send came to: delivered (2xx), refused (before any connection) or failed."""

    outcome: str  # "delivered" | "refused" | "failed"
    reason: str = ""
    status: int | None = None
    address: str = ""  # the checked address the connection went to


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order, without repeats.

    The one DNS lookup of a send: tests that need a name resolving elsewhere patch this function.
    """
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonical, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def parse_target(url: str) -> Target:
    """The scheme, host, port and path of `url`; refuses what is not a plain http(s) URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise TargetRefused("must be an http:// or https:// URL")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise TargetRefused("has no host")
    if not host.isascii():
        try:  # the name as DNS, TLS and the Host header all spell it
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise TargetRefused(f"{host} is not a valid host name") from None
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL would end up in logs and on the team page; a token in the path works.
        raise TargetRefused("must not carry a user name or password")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=scheme, host=host, port=port or SCHEMES[scheme], path=path)


def checked_addresses(target: Target) -> list[IPAddress]:
    """Resolve the target's host once and return its addresses if every one of them may be called.

    An address may be called when it is not link-local or metadata, and either it lies in a network
    of PORTAL_ALLOWED_TARGETS or the host name itself is listed there (the operator vouched for the
    name). One refused address refuses the whole target: which address a client picks is not ours.
    """
    named = ALWAYS_REFUSED_NAMES.get(target.host)
    if named:
        raise TargetRefused(f"{target.host} is {named}; the portal never calls it")
    try:
        addresses = [ipaddress.ip_address(target.host)]
    except ValueError:
        try:
            addresses = resolve(target.host, target.port)
        except (OSError, UnicodeError, ValueError):
            raise TargetRefused(f"{target.host} does not resolve") from None
    if not addresses:
        raise TargetRefused(f"{target.host} does not resolve")
    name_listed = target_allowed(target.host)
    for address in addresses:
        shown = target.host if str(address) == target.host else f"{target.host} resolves to {address}, which"
        kind = refused_kind(address)
        if kind:
            raise TargetRefused(f"{shown} is {kind}; the portal never calls it")
        if not (name_listed or target_allowed(str(address))):
            raise TargetRefused(f"{shown} is outside PORTAL_ALLOWED_TARGETS; ask an operator to allow it")
    return addresses


def url_refusal(url: str) -> str | None:
    """Why the portal would refuse to call `url` now (resolving its host), or None. For saving a URL."""
    try:
        checked_addresses(parse_target(url))
    except TargetRefused as exc:
        return exc.reason
    return None


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to one checked address; the Host header still names the URL's host."""

    def __init__(self, host: str, port: int, *, address: IPAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self.address), self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to one checked address; SNI and the certificate check use the URL's host."""

    def __init__(self, host: str, port: int, *, address: IPAddress, timeout: float,
                 context: ssl.SSLContext | None = None) -> None:
        super().__init__(host, port, timeout=timeout, context=context or ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((str(self.address), self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post_json(url: str, body: Any, *, timeout: float) -> Delivery:
    """POST `body` as JSON to `url` under the rules above. Never raises for the target's sake."""
    return post(url, json.dumps(body).encode(), content_type="application/json", timeout=timeout)


def post(url: str, data: bytes, *, content_type: str, timeout: float, headers: dict[str, str] | None = None,
         context: ssl.SSLContext | None = None) -> Delivery:
    """POST `data` to `url` under the rules above, with extra `headers` (an Authorization) and, for
    https, the TLS `context` (a collector's own CA); the default context checks the system's CAs."""
    try:
        target = parse_target(url)
        addresses = checked_addresses(target)
    except TargetRefused as exc:
        return Delivery(outcome="refused", reason=exc.reason)
    headers = {"Content-Type": content_type, "User-Agent": "dbportal", **(headers or {})}
    failure = "no address answered"
    for address in addresses:  # each one checked above; the next is tried only if connecting fails
        if target.scheme == "https":
            connection: http.client.HTTPConnection = _PinnedHTTPSConnection(
                target.host, target.port, address=address, timeout=timeout, context=context)
        else:
            connection = _PinnedHTTPConnection(target.host, target.port, address=address, timeout=timeout)
        try:
            try:
                connection.connect()
            except OSError as exc:
                failure = f"could not connect to {address}: {type(exc).__name__}"
                continue
            connection.request("POST", target.path, body=data, headers=headers)
            response = connection.getresponse()
            response.read(65536)  # a bounded read lets the server finish; the body is not ours to keep
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            return Delivery(outcome="failed", reason=f"{type(exc).__name__} from {address}", address=str(address))
        finally:
            connection.close()
        if 200 <= status < 300:
            return Delivery(outcome="delivered", status=status, address=str(address))
        if 300 <= status < 400:
            return Delivery(outcome="failed", status=status, address=str(address),
                            reason=f"answered a redirect (HTTP {status}); redirects are not followed")
        return Delivery(outcome="failed", status=status, address=str(address), reason=f"answered HTTP {status}")
    return Delivery(outcome="failed", reason=failure)

"""Where the portal may connect: PORTAL_ALLOWED_TARGETS, and the addresses it never calls.

One rule for every outbound connection, managed instances and webhooks alike: a target must be
inside PORTAL_ALLOWED_TARGETS (a network, or a host name the operator listed), and cloud
metadata, link-local and unspecified addresses are refused always, whatever the list says.
Decided here without network traffic; portal/outbound.py resolves names and applies the same
rule to every address a name resolves to.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Refused always, even when PORTAL_ALLOWED_TARGETS would include them.
ALWAYS_REFUSED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("169.254.169.254/32"), "a cloud metadata address"),  # AWS, GCP, Azure, OpenStack
    (ipaddress.ip_network("fd00:ec2::254/128"), "a cloud metadata address"),  # AWS over IPv6
    (ipaddress.ip_network("100.100.100.200/32"), "a cloud metadata address"),  # Alibaba Cloud
    (ipaddress.ip_network("169.254.0.0/16"), "a link-local address"),
    (ipaddress.ip_network("fe80::/10"), "a link-local address"),
    # "This host": connecting to 0.0.0.0 or :: reaches the portal's own machine on Linux.
    (ipaddress.ip_network("0.0.0.0/8"), "an unspecified address"),
    (ipaddress.ip_network("::/128"), "an unspecified address"),
)
ALWAYS_REFUSED_NAMES = {"metadata.google.internal": "a cloud metadata address"}
# IPv6 forms that carry an IPv4 address (NAT64's well-known prefix): judged by the IPv4 inside.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refused_kind(address: IPAddress) -> str | None:
    """Why `address` is refused whatever the allow-list says, or None."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in _NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    for network, kind in ALWAYS_REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return kind
    return None


def target_allowed(host: str) -> bool:
    """Is `host` inside PORTAL_ALLOWED_TARGETS? Decided without any network traffic."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in settings.ALLOWED_TARGETS:
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        elif entry.lower() == host.lower():
            return True
    return False



def literal_refusal(host: str) -> str | None:
    """Why a host written as an address or a known metadata name is refused always, or None."""
    named = ALWAYS_REFUSED_NAMES.get(host.lower().rstrip("."))
    if named:
        return f"{host} is {named}; the portal never connects to it"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    kind = refused_kind(address)
    return f"{host} is {kind}; the portal never connects to it" if kind else None

"""One-time secrets: a login role's generated password, revealed once to its requester.

The engine gets the password with `password_for` (creating the RequestSecret, encrypted with
portal.crypto, before the target transaction); `secret_reveal` hands it out once and wipes it;
`secret_wipe_expired` wipes the ones nobody revealed within a day. Reveals and wipes are
audited, never with the value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone

from audit.services import record
from portal.choices import RequestStatus, RequestType
from portal.crypto import decrypt, encrypt
from portal.errors import Conflict, Gone, PolicyViolation
from provisioning.errors import PermanentTargetError
from provisioning.models import RequestSecret

PASSWORD_BYTES = 24  # token_urlsafe(24) -> 32 characters


def secret_ttl() -> timedelta:
    """How long an unrevealed password is kept (SECRET_TTL_HOURS, read per call: override_settings works)."""
    return timedelta(hours=settings.SECRET_TTL_HOURS)


def password_for(request: Any, role: str) -> str:
    """The request's generated password: created and committed in the portal database before
    the target transaction, reused by every retry, so one password exists and none is lost."""
    secret = RequestSecret.objects.filter(request=request).first()
    if secret is not None and secret.encrypted:
        return decrypt(secret.encrypted)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    if secret is None:
        try:
            with transaction.atomic():
                RequestSecret.objects.create(request=request, role=role, encrypted=encrypt(password))
        except IntegrityError:
            # Another attempt created it first: use theirs.
            return decrypt(RequestSecret.objects.get(request=request).encrypted)
    else:
        # Wiped without a marker on the target: that password never reached the cluster.
        RequestSecret.objects.filter(pk=secret.pk).update(
            encrypted=encrypt(password), revealed_at=None, wiped_at=None, created_at=timezone.now()
        )
    return password


def secret_role(request: Any) -> str:
    """The login role a plan's secret step is for: only a role request has one."""
    role = (request.payload or {}).get("name")
    if request.type != RequestType.ROLE or not role:
        raise PermanentTargetError("the plan has a secret step but the request creates no role")
    return str(role)


def secret_reveal(*, request: Any, user: Any, actor_ip: str | None = None) -> str:
    """The plain password, once, to the requester; then it is wiped (later calls: Gone)."""
    if request.requester_id is None or request.requester_id != getattr(user, "pk", None):
        raise PolicyViolation("only the requester may reveal this request's password")
    with transaction.atomic():
        secret = RequestSecret.objects.select_for_update().filter(request_id=request.pk).first()
        if secret is None:
            if request.status in (RequestStatus.APPLIED, RequestStatus.FAILED) or request.type != "role":
                raise Http404("this request has no generated password")
            raise Conflict("the password is generated when the request is applied")
        if secret.wiped_at is not None or not secret.encrypted:
            raise Gone("the password was already revealed or has expired; it is shown only once")
        if request.status != RequestStatus.APPLIED:
            raise Conflict("the password can be revealed once the request is applied")
        password = decrypt(secret.encrypted)
        now = timezone.now()
        secret.encrypted = ""
        secret.revealed_at = now
        secret.wiped_at = now
        secret.save(update_fields=["encrypted", "revealed_at", "wiped_at"])
        record("secret.revealed", actor=user, actor_ip=actor_ip, object_type="role", object_id=secret.role,
               instance=request.instance, request_id=request.pk, outcome="revealed")
    return password


def secret_wipe_expired(now=None) -> int:
    """Wipe secrets nobody revealed within secret_ttl() (a beat job)."""
    now = now or timezone.now()
    wiped = 0
    for pk in RequestSecret.objects.filter(wiped_at__isnull=True, created_at__lte=now - secret_ttl()).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            secret = RequestSecret.objects.select_for_update(of=("self",)).select_related("request__instance").get(pk=pk)
            if secret.wiped_at is not None:
                continue
            secret.encrypted = ""
            secret.wiped_at = now
            secret.save(update_fields=["encrypted", "wiped_at"])
            record("secret.wiped", object_type="role", object_id=secret.role, instance=secret.request.instance,
                   request_id=secret.request_id, outcome="expired", details={"reason": "not revealed in time"})
            wiped += 1
    return wiped


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier computed here, so the plain password never reaches the server (or its log)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"

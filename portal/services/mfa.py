"""MFA for local accounts: TOTP (django-otp) with recovery codes, and password changes.

Who may do what: a user enrols, uses and removes their own TOTP device and changes their own
password; nobody else can (there is no admin path to read or reset another person's second
factor; a lost device is what the recovery codes are for). Single sign-on sessions are the
identity provider's business and never asked for a local code.

When a code is asked for — at the password sign-in (web: a second step; API: the `otp` field of
`POST /api/v1/auth/token/`):
- the user has a confirmed TOTP device: always;
- `PORTAL_MFA_REQUIRED_FOR_ADMINS` (on by default, off when `PORTAL_ENVIRONMENT=demo`) and the
  user is a platform admin while local sign-in is on: a device is required; without one the web
  session can only reach the enrolment page and the API refuses to issue a token.
So the demo's personas sign in with the printed password (enrolment offered, not forced).

The web session records its state in `request.session[SESSION_KEY]` at sign-in (`pending`: a code
is owed; `enrol`: a device must be enrolled first; `verified`): portal/middleware.py reads it
without a query. Events: auth.mfa_enrolled, auth.mfa_removed, auth.mfa_failed, auth.mfa_verified
(the second step passed), auth.password_changed.
"""

from __future__ import annotations

import base64
from typing import Any

import segno
from django.conf import settings
from django.contrib.auth import password_validation, update_session_auth_hash
from django.core.exceptions import ValidationError
from django.db import transaction
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.services import record
from portal.errors import InvalidPayload, PolicyViolation
from portal.personas import is_admin

SESSION_KEY = "portal_mfa"
PENDING, ENROL, VERIFIED = "pending", "enrol", "verified"
RECOVERY_CODES = 10
DEVICE_NAME = "authenticator app"
MAX_CODE = 64


def mfa_required(user: Any) -> bool:
    """Must this user have a TOTP device to use a local password?"""
    return (bool(settings.MFA_REQUIRED_FOR_ADMINS) and bool(getattr(settings, "LOCAL_LOGIN", True))
            and is_admin(user))


def mfa_device(user: Any) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def mfa_state_for_sign_in(user: Any) -> str:
    """The session state a password sign-in of `user` starts in (see the module doc)."""
    if mfa_device(user) is not None:
        return PENDING
    if mfa_required(user):
        return ENROL
    return VERIFIED


def _clean_code(code: Any) -> str:
    if not isinstance(code, str):
        return ""
    return "".join(code.split())[:MAX_CODE]


def _match(user: Any, code: str) -> Any:
    """The device that accepts `code` (the TOTP device, else a recovery code, used up), or None.
    django-otp throttles each device after failures (growing delays), so guessing is slow."""
    if not code:
        return None
    if code.isdigit():  # the app's code; recovery codes are letters (each kind throttles on its own)
        device = mfa_device(user)
        return device if device is not None and device.verify_token(code) else None
    for static in StaticDevice.objects.filter(user=user, confirmed=True):
        if static.verify_token(code):  # deletes the recovery code it matched
            return static
    return None


def mfa_check(*, user: Any, code: Any, channel: str, actor_ip: str | None = None) -> bool:
    """Is `code` a valid second factor for `user` now? A failure is audited (auth.mfa_failed)."""
    code = _clean_code(code)
    with transaction.atomic():
        device = _match(user, code)
        if device is None:
            record("auth.mfa_failed", actor=user, actor_ip=actor_ip, object_type="user", object_id=user.pk,
                   outcome="failed", details={"channel": channel,
                                              "reason": "no code given" if not code else "wrong or used code"})
            return False
        record("auth.mfa_verified", actor=user, actor_ip=actor_ip, object_type="user", object_id=user.pk,
               outcome="ok", details={"channel": channel,
                                      "method": "recovery code" if isinstance(device, StaticDevice) else "totp"})
    return True


def mfa_verify_session(*, request: Any, code: Any, actor_ip: str | None = None) -> bool:
    """The web sign-in's second step: a right code marks the session verified."""
    if not mfa_check(user=request.user, code=code, channel="web", actor_ip=actor_ip):
        return False
    request.session[SESSION_KEY] = VERIFIED
    request.session.cycle_key()  # a new session id once the second factor is in
    return True


def mfa_enrol_start(user: Any) -> TOTPDevice:
    """A new unconfirmed TOTP device (a fresh secret) for `user`; an earlier unconfirmed one goes."""
    if mfa_device(user) is not None:
        raise PolicyViolation("an authenticator is enrolled already; remove it first")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        return TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


def mfa_pending_device(user: Any) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()


def mfa_qr_svg(device: TOTPDevice) -> str:
    """The otpauth:// URL as an inline SVG QR code (no image request, no third party)."""
    return segno.make(device.config_url, error="m").svg_inline(scale=4, dark="#000", light="#fff")


def mfa_secret_text(device: TOTPDevice) -> str:
    """The secret in base32, for typing into an app by hand."""
    return base64.b32encode(device.bin_key).decode().rstrip("=")


def mfa_enrol_confirm(*, request: Any, code: Any, actor_ip: str | None = None) -> list[str]:
    """Confirm the pending device with a code from the app; returns the recovery codes (shown once).
    A wrong code is audited (auth.mfa_failed) and answered 400 on `code`."""
    user = request.user
    code = _clean_code(code)
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).order_by("-pk").first()
        if device is None:
            raise InvalidPayload.field("code", "start the enrolment again: no authenticator is waiting to be confirmed")
        if not (code.isdigit() and device.verify_token(code)):
            record("auth.mfa_failed", actor=user, actor_ip=actor_ip, object_type="user", object_id=user.pk,
                   outcome="failed", details={"channel": "enrolment", "reason": "wrong code"})
            failed = True
        else:
            failed = False
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            StaticDevice.objects.filter(user=user).delete()
            static = StaticDevice.objects.create(user=user, name="recovery codes", confirmed=True)
            codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
            StaticToken.objects.bulk_create([StaticToken(device=static, token=c) for c in codes])
            record("auth.mfa_enrolled", actor=user, actor_ip=actor_ip, object_type="user", object_id=user.pk,
                   outcome="ok", details={"method": "totp", "recovery_codes": RECOVERY_CODES})
    if failed:  # recorded, then refused: the event commits with its transaction above
        raise InvalidPayload.field("code", "that code is not right; check the time on your device and try again")
    request.session[SESSION_KEY] = VERIFIED
    return codes


def mfa_remove(*, request: Any, code: Any, actor_ip: str | None = None) -> None:
    """The user removes their own TOTP device and recovery codes, proving a current code first.
    Where MFA is required for them, their session must enrol again before going anywhere."""
    user = request.user
    if mfa_device(user) is None:
        raise InvalidPayload.field("code", "no authenticator is enrolled")
    if not mfa_check(user=user, code=code, channel="removal", actor_ip=actor_ip):
        raise InvalidPayload.field("code", "that code is not right")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).delete()
        StaticDevice.objects.filter(user=user).delete()
        record("auth.mfa_removed", actor=user, actor_ip=actor_ip, object_type="user", object_id=user.pk,
               outcome="ok", details={"required": mfa_required(user)})
    request.session[SESSION_KEY] = ENROL if mfa_required(user) else VERIFIED


def password_change(*, request: Any, old_password: Any, new_password: Any, actor_ip: str | None = None) -> None:
    """The user changes their own local password: the old one proves it is them, the new one meets
    the validators. Their other sessions end (the session hash changes); this one stays."""
    user = request.user
    if not isinstance(old_password, str) or not user.check_password(old_password):
        raise InvalidPayload.field("old_password", "that is not your current password")
    if not isinstance(new_password, str) or not new_password:
        raise InvalidPayload.field("new_password", "choose a new password")
    try:
        password_validation.validate_password(new_password, user)
    except ValidationError as exc:  # the validators' messages go back on the field
        messages = exc.messages
        raise InvalidPayload("new_password: " + messages[0], errors={"new_password": list(messages)}) from None
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        record("auth.password_changed", actor=user, actor_ip=actor_ip, object_type="user", object_id=user.pk,
               outcome="ok", details={"channel": "web"})
    update_session_auth_hash(request, user)

"""Request-wide concerns: log context, the bad-input guard, no caching of API answers, and the
audit of refused access."""

import structlog
from django.http import JsonResponse
from django.shortcuts import redirect
from django.utils.cache import patch_cache_control

from portal.input_guard import BadInput, check_request
from portal.services import mfa
from portal.services.auth import access_denied_record, client_ip
from portal.services.system_objects import current_request
from portal.views.error_pages import bad_input

log = structlog.get_logger(__name__)


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(path=request.path, ip=client_ip(request))
        # Who deletes a system object through a page or the API (portal/services/system_objects.py).
        token = current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            current_request.reset(token)


class InputGuardMiddleware:
    """A NUL, a lone surrogate or JSON nested too deep anywhere in a request: 400, before any view.

    One guard for every page and API operation (portal/input_guard.py), rather than one per view.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            check_request(request)
        except BadInput as exc:
            log.info("request.bad_input", path=request.path, field=exc.field, problem=exc.message)
            return bad_input(request, exc)
        return self.get_response(request)


class ApiNoStoreMiddleware:
    """API answers carry Cache-Control: no-store: they hold tokens, plans and audit data that no
    browser cache or intermediate proxy may keep."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith("/api/"):
            patch_cache_control(response, no_store=True, private=True)
        return response


class AccessDeniedAuditMiddleware:
    """Every 401 and 403 answer, of any page or API route and for any reason (permissions, CSRF),
    is an audit event `access.denied`. Recorded in a transaction of its own once the answer is
    known; if the log cannot be written the refusal still goes out, and the failure is logged."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code in (401, 403) and not getattr(request, "refusal_audited", False):
            try:
                access_denied_record(request=request, status=response.status_code)
            except Exception as exc:  # noqa: BLE001 - the refusal stands whatever happens to its record
                log.error("audit.access_denied_not_recorded", path=request.path, error=type(exc).__name__)
        return response



class MfaSessionMiddleware:
    """A password sign-in that still owes its second factor (portal/services/mfa.py) reaches only the
    MFA pages, sign-out and static files: pages redirect to the code or enrolment page, the API
    answers 403. The state sits in the session (set at sign-in), so this costs no query."""

    ALLOWED = ("/account/mfa/", "/logout/", "/static/", "/healthz")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        session = getattr(request, "session", None)
        state = session.get(mfa.SESSION_KEY) if session is not None and session.session_key else None
        if state in (mfa.PENDING, mfa.ENROL) and not request.path.startswith(self.ALLOWED):
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": "finish signing in: enter your one-time code on the web first",
                                     "errors": {}}, status=403)
            return redirect("mfa-verify" if state == mfa.PENDING else "mfa-enrol")
        return self.get_response(request)

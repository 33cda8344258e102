"""Request-wide concerns: log context, the bad-input guard, no caching of API answers, and the
audit of refused access."""

import structlog
from django.utils.cache import patch_cache_control

from portal.input_guard import BadInput, check_request
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

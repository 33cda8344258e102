"""Request-wide concerns: log context, the bad-input guard, no caching of API answers."""

import structlog
from django.utils.cache import patch_cache_control

from portal.input_guard import BadInput, check_request
from portal.services.auth import client_ip
from portal.views.error_pages import bad_input

log = structlog.get_logger(__name__)


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(path=request.path, ip=client_ip(request))
        return self.get_response(request)


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

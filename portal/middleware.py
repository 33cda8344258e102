"""Binds the request's user and IP to structured logs."""

import structlog

from portal.services.auth import client_ip


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(path=request.path, ip=client_ip(request))
        return self.get_response(request)

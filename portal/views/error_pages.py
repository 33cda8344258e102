"""Error pages: JSON in the API's shape under /api/, HTML elsewhere."""

from django.http import JsonResponse
from django.shortcuts import render


def _wants_json(request) -> bool:
    return request.path.startswith("/api/")


def not_found(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"detail": "Not found.", "errors": {}}, status=404)
    return render(request, "errors/404.html", status=404)


def server_error(request):
    if _wants_json(request):
        return JsonResponse({"detail": "internal error; it has been logged", "errors": {}}, status=500)
    return render(request, "errors/500.html", status=500)


def permission_denied(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"detail": "You do not have permission to perform this action.", "errors": {}}, status=403)
    return render(request, "errors/403.html", status=403)


def bad_request(request, exception=None):
    if _wants_json(request):
        return JsonResponse({"detail": "bad request", "errors": {}}, status=400)
    return render(request, "errors/400.html", status=400)


def bad_input(request, exc):
    """The bad-input guard's answer (portal.input_guard.BadInput): 400 naming the field at fault."""
    if _wants_json(request):
        return JsonResponse({"detail": f"{exc.field}: {exc.message}", "errors": exc.errors}, status=400)
    return render(request, "errors/400.html", {"problem": f"{exc.field}: {exc.message}"}, status=400)

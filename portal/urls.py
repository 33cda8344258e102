"""URLs: UI pages, /api/v1/, /healthz and /metrics."""

from django.contrib.auth.views import LogoutView
from django.urls import include, path

from portal.views import auth, health, home, instances

urlpatterns = [
    path("login/", auth.PortalLoginView.as_view(), name="login"),
    path("logout/", LogoutView.as_view(), name="logout"),
    path("", home.home, name="home"),
    path("instances/", instances.instance_list, name="instance-list"),
    path("instances/register/", instances.instance_register_view, name="instance-register"),
    path("instances/<int:pk>/", instances.instance_detail, name="instance-detail"),
    path("", include("audit.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("api/v1/", include(("portal.api.urls", "api"), namespace="api")),
    path("", include("django_prometheus.urls")),
]

handler400 = "portal.views.errors.bad_request"
handler403 = "portal.views.errors.permission_denied"
handler404 = "portal.views.errors.not_found"
handler500 = "portal.views.errors.server_error"

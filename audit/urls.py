"""Auditor pages (included by portal/urls.py at the site root)."""

from django.urls import path

from audit import views

urlpatterns = [
    path("audit/", views.audit_log, name="audit-log"),
    path("audit/events/<int:seq>/", views.audit_event_detail, name="audit-event"),
    path("audit/exports/", views.audit_exports, name="audit-exports"),
    path("audit/verify/", views.audit_verify_page, name="audit-verify-page"),
]

"""Auditor pages (included by portal/urls.py at the site root)."""

from django.urls import path

from audit import archive_views, siem_views, views

urlpatterns = [
    path("audit/", views.audit_log, name="audit-log"),
    path("audit/events/<int:seq>/", views.audit_event_detail, name="audit-event"),
    path("audit/exports/", views.audit_exports, name="audit-exports"),
    path("audit/verify/", views.audit_verify_page, name="audit-verify-page"),
    path("audit/archives/", archive_views.audit_archives, name="audit-archives"),
    path("audit/archives/<str:period>/", archive_views.audit_archive_events, name="audit-archive"),
    # platform admins: SIEM forwarding state, pause and resume (audit/siem_views.py)
    path("audit/forwarding/", siem_views.siem_page, name="audit-siem"),
    path("audit/forwarding/<str:name>/pause/", siem_views.siem_action, {"action": "pause"}, name="audit-siem-pause"),
    path("audit/forwarding/<str:name>/resume/", siem_views.siem_action, {"action": "resume"},
         name="audit-siem-resume"),
]

"""Audit routes under /api/v1/ (included by portal/api/urls.py)."""

from django.urls import path

from audit.api import archives, siem, views

urlpatterns = [
    path("audit/events/", views.AuditEventListView.as_view(), name="audit-events"),
    path("audit/events/<int:seq>/", views.AuditEventDetailView.as_view(), name="audit-event-detail"),
    path("audit/verify/", views.AuditVerifyView.as_view(), name="audit-verify"),
    path("audit/archives/", archives.AuditArchiveListView.as_view(), name="audit-archives"),
    path("audit/archives/<str:period>/events/", archives.AuditArchiveEventsView.as_view(),
         name="audit-archive-events"),
    path("audit/archives/<str:period>/export/", archives.AuditArchiveExportView.as_view(),
         name="audit-archive-export"),
    path("audit/siem/", siem.SiemCollectorListView.as_view(), name="audit-siem"),
    path("audit/siem/<str:name>/pause/", siem.SiemCollectorPauseView.as_view(), name="audit-siem-pause"),
    path("audit/siem/<str:name>/resume/", siem.SiemCollectorResumeView.as_view(), name="audit-siem-resume"),
]

"""/api/v1/: one router; each app registers its viewsets here."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from audit.api.views import AuditExportView
from portal.api.access import AccessView
from portal.api.access_reviews import CampaignViewSet
from portal.api.backups import BackupListView, BackupPolicyView, DrillListView
from portal.api.breakglass import BreakGlassViewSet
from portal.api.change_sets import ChangeSetViewSet
from portal.api.dictionary import (
    DictionaryCommentView,
    DictionaryDatabasesView,
    DictionaryHintsView,
    DictionaryHistoryView,
    DictionarySearchView,
    DictionaryView,
)
from portal.api.drift import DriftViewSet
from portal.api.entitlements import EntitlementView
from portal.api.identity import GroupMappingViewSet
from portal.api.monitoring import MonitoringSeriesView, MonitoringThresholdsView, MonitoringView
from portal.api.requests import RequestViewSet
from portal.api.team_checks import TeamCheckDetailView, TeamCheckListView
from portal.api.tokens import ApiTokenViewSet
from portal.api.users import UserViewSet
from portal.api.views import InstanceViewSet, TeamViewSet, TokenView
from portal.selectors.entitlements import entitlements_at

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("teams", TeamViewSet, basename="team")
router.register("instances", InstanceViewSet, basename="instance")
router.register("requests", RequestViewSet, basename="request")
router.register("drift", DriftViewSet, basename="drift")
router.register("tokens", ApiTokenViewSet, basename="token")
router.register("users", UserViewSet, basename="user")
router.register("change-sets", ChangeSetViewSet, basename="change-set")
router.register("identity/group-mappings", GroupMappingViewSet, basename="group-mapping")
router.register("break-glass", BreakGlassViewSet, basename="break-glass")
router.register("reviews/campaigns", CampaignViewSet, basename="access-review-campaign")

urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:api-schema"), name="api-docs"),
    path("", include("audit.api.urls")),
    # Routed here, not in audit/api/urls.py: the PDF's entitlements section reads provisioning's
    # drift findings, which audit does not import (the audit-without-provisioning contract).
    path("audit/export/", AuditExportView.as_view(entitlements_at=entitlements_at), name="audit-export"),
    path("entitlements/", EntitlementView.as_view(), name="entitlements"),
    path("access/", AccessView.as_view(), name="access"),
    path("instances/<int:pk>/monitoring/", MonitoringView.as_view(), name="instance-monitoring"),
    path("instances/<int:pk>/backup-policy/", BackupPolicyView.as_view(), name="instance-backup-policy"),
    path("instances/<int:pk>/backups/", BackupListView.as_view(), name="instance-backups"),
    path("instances/<int:pk>/drills/", DrillListView.as_view(), name="instance-drills"),
    path("instances/<int:pk>/team-checks/", TeamCheckListView.as_view(), name="instance-team-checks"),
    path("instances/<int:pk>/team-checks/<int:check_id>/", TeamCheckDetailView.as_view(), name="instance-team-check"),
    path("instances/<int:pk>/monitoring/series/", MonitoringSeriesView.as_view(), name="instance-monitoring-series"),
    path("instances/<int:pk>/monitoring/thresholds/", MonitoringThresholdsView.as_view(),
         name="instance-monitoring-thresholds"),
    path("instances/<int:pk>/dictionary/", DictionaryDatabasesView.as_view(), name="instance-dictionary"),
    path("instances/<int:pk>/dictionary/<str:database>/", DictionaryView.as_view(), name="instance-dictionary-database"),
    path("instances/<int:pk>/dictionary/<str:database>/history/", DictionaryHistoryView.as_view(),
         name="instance-dictionary-history"),
    path("instances/<int:pk>/dictionary/<str:database>/hints/", DictionaryHintsView.as_view(),
         name="instance-dictionary-hints"),
    path("instances/<int:pk>/dictionary/<str:database>/comment/", DictionaryCommentView.as_view(),
         name="instance-dictionary-comment"),
    path("dictionary/search/", DictionarySearchView.as_view(), name="dictionary-search"),
    path("", include(router.urls)),
]

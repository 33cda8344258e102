"""URLs: UI pages, /api/v1/, /healthz and /metrics."""

from django.urls import include, path

from portal.views import (
    access,
    access_reviews,
    account,
    admin_pages,
    auth,
    backups,
    breakglass,
    change_sets,
    dashboard,
    dictionary,
    drift,
    entitlements,
    health,
    home,
    identity,
    instances,
    monitoring,
    requests,
    review_rules,
    reviews,
)

urlpatterns = [
    path("login/", auth.PortalLoginView.as_view(), name="login"),
    path("logout/", auth.PortalLogoutView.as_view(), name="logout"),
    # own account (#17): API tokens, authenticator app, password; platform admins: users, offboarding
    path("account/tokens/", account.token_list, name="token-list"),
    path("account/tokens/<int:pk>/revoke/", account.token_revoke_view, name="token-revoke"),
    path("account/mfa/", account.mfa_enrol, name="mfa-enrol"),
    path("account/mfa/verify/", account.mfa_verify, name="mfa-verify"),
    path("account/password/", account.password_change_view, name="password-change"),
    path("users/", account.user_list, name="user-list"),
    path("users/<int:pk>/", account.user_offboard, name="user-offboard"),
    path("login/oidc/", identity.oidc_start, name="oidc-start"),
    path("login/oidc/callback/", identity.oidc_callback, name="oidc-callback"),
    path("identity/group-mappings/", identity.group_mapping_list, name="group-mapping-list"),
    path("identity/group-mappings/<int:pk>/", identity.group_mapping_edit, name="group-mapping-edit"),
    path("identity/group-mappings/<int:pk>/delete/", identity.group_mapping_delete, name="group-mapping-delete"),
    path("", home.home, name="home"),
    path("instances/", instances.instance_list, name="instance-list"),
    path("instances/register/", instances.instance_register_view, name="instance-register"),
    path("instances/<int:pk>/", instances.instance_detail, name="instance-detail"),
    path("instances/<int:pk>/monitoring/", monitoring.instance_monitoring, name="instance-monitoring"),
    path("instances/<int:pk>/dictionary/", dictionary.instance_dictionary, name="instance-dictionary"),
    path("dictionary/", dictionary.dictionary_search_page, name="dictionary-search"),
    path("instances/<int:pk>/backups/", backups.instance_backups, name="instance-backups"),
    # requests (ui)
    path("requests/", requests.request_list, name="request-list"),
    path("requests/new/", requests.request_new, name="request-new"),
    path("requests/new/<str:request_type>/", requests.request_new_form, name="request-new-form"),
    path("requests/new/<str:request_type>/fields/", requests.request_form_fields, name="request-form-fields"),
    path("requests/new/<str:request_type>/preview/", requests.request_preview, name="request-preview"),
    path("requests/search/", requests.request_search_view, name="request-search"),
    path("requests/<int:pk>/", requests.request_detail, name="request-detail"),
    path("requests/<int:pk>/status/", requests.request_status, name="request-status"),
    path("requests/<int:pk>/reveal/", requests.request_reveal, name="request-reveal"),
    path("requests/<int:pk>/context/", requests.request_context_view, name="request-context"),
    path("requests/<int:pk>/<str:action>/", requests.request_action, name="request-action"),
    path("reviews/", reviews.review_queue, name="review-queue"),
    path("change-sets/", change_sets.change_set_list, name="change-set-list"),
    path("change-sets/<int:pk>/", change_sets.change_set_detail, name="change-set-detail"),
    path("change-sets/<int:pk>/<str:action>/", change_sets.change_set_decide, name="change-set-decide"),
    path("break-glass/new/", breakglass.break_glass_new, name="break-glass-new"),
    path("break-glass/settings/", breakglass.break_glass_settings_view, name="break-glass-settings"),
    path("break-glass/<int:pk>/review/", breakglass.break_glass_review_view, name="break-glass-review"),
    # access reviews (#18): recertification campaigns, not request approvals
    path("access-reviews/", access_reviews.campaign_list, name="access-review-list"),
    path("access-reviews/new/", access_reviews.campaign_new, name="access-review-new"),
    path("access-reviews/<int:pk>/", access_reviews.campaign_detail, name="access-review-detail"),
    path("access-reviews/<int:pk>/decide/", access_reviews.campaign_decide, name="access-review-decide"),
    path("access-reviews/<int:pk>/reassign/", access_reviews.campaign_reassign, name="access-review-reassign"),
    path("access-reviews/<int:pk>/report.<str:fmt>", access_reviews.campaign_report, name="access-review-report"),
    path("access/", access.my_access_view, name="my-access"),
    path("drift/", drift.drift_list, name="drift-list"),
    path("drift/<int:pk>/<str:action>/", drift.drift_action, name="drift-action"),
    path("instances/<int:pk>/scan/", drift.drift_scan_now, name="drift-scan"),
    path("dashboard/data/", dashboard.dashboard_data, name="dashboard-data"),
    # administration (ui)
    path("teams/", admin_pages.team_list, name="team-list"),
    path("teams/<int:pk>/", admin_pages.team_detail, name="team-detail"),
    path("policies/", admin_pages.policy_list, name="policy-list"),
    path("policies/<int:pk>/", admin_pages.policy_edit, name="policy-edit"),
    path("instances/<int:pk>/promote/", instances.instance_promote_view, name="instance-promote"),
    path("instances/<int:pk>/decommission/", instances.instance_decommission_view, name="instance-decommission"),
    path("", include("audit.urls")),
    path("entitlements/", entitlements.entitlements, name="entitlements"),
    path("review-rules/", review_rules.review_rules, name="review-rules"),
    # machines
    path("healthz", health.healthz, name="healthz"),
    path("api/v1/", include(("portal.api.urls", "api"), namespace="api")),
    # django_prometheus's scrape, GET/HEAD only, for PORTAL_METRICS_TOKEN or PORTAL_METRICS_ALLOWED
    path("metrics", health.metrics, name="prometheus-django-metrics"),
]

handler400 = "portal.views.error_pages.bad_request"
handler403 = "portal.views.error_pages.permission_denied"
handler404 = "portal.views.error_pages.not_found"
handler500 = "portal.views.error_pages.server_error"

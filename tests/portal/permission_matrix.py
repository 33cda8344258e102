"""Who may do what: persona × every URL of the UI and the API × method → expected status.

One row per (route name, method). `expect` lists six statuses in PERSONAS order:

    anonymous · developer of the team (alice, payments) · developer of another team (dave,
    analytics) · reviewer (bob) · auditor (carol) · platform admin (admin)

The objects in the paths belong to alice's team: {request} is a request alice submitted (still
`submitted`), {instance} the managed instance `demo`, {team} the team payments, {seq} an audit
event, {policy} an approval policy, {drift} an open drift finding on `demo`. Out of scope answers
404 (never a 403 that confirms it exists); a visible object the persona may not act on, 403.
UI pages send anonymous visitors to the login page (302); the API answers them 401.

test_permission_matrix.py walks Django's URL resolver: a route without a row here fails the suite
with its name. Adding an endpoint = adding its rows here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.fixtures.people import PASSWORD

PERSONAS = ("anonymous", "developer", "other_developer", "reviewer", "auditor", "admin")
USERNAMES = {"anonymous": None, "developer": "alice", "other_developer": "dave", "reviewer": "bob",
             "auditor": "carol", "admin": "admin"}


@dataclass(frozen=True)
class Row:
    route: str            # URL name, with its namespace ("api:request-detail")
    method: str
    path: str             # placeholders: {request} {instance} {team} {seq} {policy} {drift} {campaign} {item}
                          # {team_check}
    expect: str           # six statuses, PERSONAS order
    data: dict = field(default_factory=dict)  # the body: valid, so allowed personas get the success status

    @property
    def statuses(self) -> dict[str, int]:
        codes = [int(code) for code in self.expect.split()]
        assert len(codes) == len(PERSONAS), f"{self.route} {self.method}: six statuses expected"
        return dict(zip(PERSONAS, codes, strict=True))


SCHEMA_FORM = {"instance": "{instance}", "team": "{team}", "database": "app", "name": "matrix_schema",
               "justification": "permission matrix"}
_BREAK_GLASS_GRANT = {"role": "matrix_role", "database": "app", "schema": "matrix_absent", "privileges": ["SELECT"],
                      "tables": "all"}
BREAK_GLASS_API = {"instance": "{instance}", "team": "{team}", "justification": "permission matrix",
                   "incident_ref": "INC-1", "duration_minutes": 30, "payload": _BREAK_GLASS_GRANT}
BREAK_GLASS_FORM = {"instance": "{instance}", "team": "{team}", "role": "matrix_role", "database": "app",
                    "schema": "matrix_absent", "privileges": ["SELECT"], "incident_ref": "INC-1",
                    "duration_minutes": "30", "justification": "permission matrix"}

ROWS: list[Row] = [
    # --- UI: everyone's pages -------------------------------------------------------------------
    Row("login", "GET", "/login/", "200 302 302 302 302 302"),  # logged in: sent on to their home
    Row("login", "POST", "/login/", "302 302 302 302 302 302", data={"username": "alice", "password": PASSWORD}),
    Row("logout", "POST", "/logout/", "302 302 302 302 302 302"),
    # Single sign-on (#17): not configured in the matrix (no PORTAL_OIDC_ISSUER), so not there for anyone;
    # tests/identity/ runs them against a real provider.
    Row("oidc-start", "GET", "/login/oidc/", "404 404 404 404 404 404"),
    Row("oidc-callback", "GET", "/login/oidc/callback/?code=c&state=s", "404 404 404 404 404 404"),
    Row("group-mapping-list", "GET", "/identity/group-mappings/", "302 403 403 403 403 200"),
    Row("group-mapping-list", "POST", "/identity/group-mappings/", "302 403 403 403 403 302",
        data={"group": "matrix-ui", "persona": "auditors"}),
    Row("group-mapping-edit", "GET", "/identity/group-mappings/{mapping}/", "302 403 403 403 403 200"),
    Row("group-mapping-edit", "POST", "/identity/group-mappings/{mapping}/", "302 403 403 403 403 302",
        data={"group": "matrix-ui", "team": "payments", "team_role": "member"}),
    Row("group-mapping-delete", "POST", "/identity/group-mappings/{mapping}/delete/", "302 403 403 403 403 302"),
    Row("home", "GET", "/", "302 200 200 200 302 200"),  # an auditor's home is the audit log
    Row("healthz", "GET", "/healthz", "200 200 200 200 200 200"),
    Row("prometheus-django-metrics", "GET", "/metrics", "200 200 200 200 200 200"),
    Row("instance-list", "GET", "/instances/", "302 200 200 200 200 200"),
    Row("instance-detail", "GET", "/instances/{instance}/", "302 200 200 200 200 200"),
    Row("instance-register", "GET", "/instances/register/", "302 403 403 403 403 200"),
    # a host outside PORTAL_ALLOWED_TARGETS: the admin's form comes back with the reason, nothing dialled
    Row("instance-register", "POST", "/instances/register/", "302 403 403 403 403 400",
        data={"name": "matrix", "environment": "dev", "host": "10.9.9.9", "port": "5432", "database": "postgres",
              "admin_user": "postgres", "admin_password": "not-dialled"}),
    # {instance} is a primary: admin's promote / decommission is refused with a message (UI) or 409 (API).
    Row("instance-promote", "POST", "/instances/{instance}/promote/", "302 403 403 403 403 302"),
    Row("instance-decommission", "POST", "/instances/{instance}/decommission/", "302 403 403 403 403 302"),
    Row("dashboard-data", "GET", "/dashboard/data/", "302 403 403 200 403 200"),
    # --- UI: requests ---------------------------------------------------------------------------
    Row("request-list", "GET", "/requests/", "302 200 200 200 200 200"),
    Row("request-new", "GET", "/requests/new/", "302 200 200 200 200 200"),
    Row("request-new-form", "GET", "/requests/new/schema/", "302 200 200 200 200 200"),
    # submitted: alice (her team) and the admin land on the new request; anyone else gets the form back
    Row("request-new-form", "POST", "/requests/new/schema/", "302 302 400 400 400 302", data=SCHEMA_FORM),
    Row("request-form-fields", "POST", "/requests/new/schema/fields/", "302 200 200 200 200 200",
        data=SCHEMA_FORM),
    Row("request-preview", "POST", "/requests/new/schema/preview/", "302 200 200 200 200 200", data=SCHEMA_FORM),
    Row("request-search", "GET", "/requests/search/?q=matrix", "302 200 200 200 200 200"),
    Row("request-detail", "GET", "/requests/{request}/", "302 200 404 200 200 200"),
    Row("request-status", "GET", "/requests/{request}/status/", "302 200 404 200 200 200"),
    # The UI answers a refused action with a redirect and an error message (302 for alice, who may
    # not approve her own request, and for carol); the API rows below show the refusals as 403.
    Row("request-action", "POST", "/requests/{request}/approve/", "302 302 404 302 302 302",
        data={"comment": "matrix"}),
    # htmx partial: 200 with "only the requester" / "nothing to reveal" in it (a schema request has no
    # secret: 404 for alice); the password itself is covered by the provisioning and security tests.
    Row("request-reveal", "POST", "/requests/{request}/reveal/", "302 404 404 200 200 200"),
    # the reviewer's context (#19): reviewers and admins; the requester sees the request, not the context
    Row("request-context", "GET", "/requests/{request}/context/", "302 403 404 200 403 200"),
    Row("review-queue", "GET", "/reviews/", "302 403 403 200 403 200"),
    Row("change-set-list", "GET", "/change-sets/", "302 200 200 200 200 200"),
    Row("change-set-detail", "GET", "/change-sets/{change_set}/", "302 200 404 200 200 200"),
    Row("change-set-decide", "POST", "/change-sets/{change_set}/approve/", "302 403 403 302 403 302"),
    # Break-glass (#18): the form is everyone's, the service refuses all but requesters of the owning
    # team (here: a schema that does not exist, 400 for alice; a 403 in the form is a 400 page for the
    # others, whose team field has no team of theirs); {request} is no break-glass request (404).
    Row("break-glass-new", "GET", "/break-glass/new/", "302 200 200 200 200 200"),
    Row("break-glass-new", "POST", "/break-glass/new/", "302 400 400 400 400 400", data=BREAK_GLASS_FORM),
    Row("break-glass-settings", "GET", "/break-glass/settings/", "302 403 403 403 403 200"),
    Row("break-glass-settings", "POST", "/break-glass/settings/", "302 403 403 403 403 302",
        data={"environment": "staging", "enabled": "on"}),
    Row("break-glass-review", "POST", "/break-glass/{request}/review/", "302 404 404 404 404 404",
        data={"outcome": "acknowledged", "comment": "checked"}),
    Row("my-access", "GET", "/access/", "302 200 200 200 200 200"),
    # Auditors read drift (read-only, as over the API); acting on it stays with reviewers.
    Row("drift-list", "GET", "/drift/", "302 403 403 200 200 200"),
    Row("drift-action", "POST", "/drift/{drift}/acknowledge/", "302 403 403 302 403 302", data={"comment": "known"}),
    Row("drift-scan", "POST", "/instances/{instance}/scan/", "302 403 403 302 403 302"),
    # Access reviews (#18): {campaign} opened by bob, its {item} certified by alice and held by dave.
    # Readers: reviewers, auditors, admins, and alice as a certifier (dave has no item: 404).
    Row("access-review-list", "GET", "/access-reviews/", "302 200 200 200 200 200"),
    Row("access-review-new", "GET", "/access-reviews/new/", "302 403 403 200 403 200"),
    Row("access-review-new", "POST", "/access-reviews/new/", "302 403 403 400 403 400", data={"name": "m"}),
    Row("access-review-detail", "GET", "/access-reviews/{campaign}/", "302 200 404 200 200 200"),
    # only the item's certifier decides; a reviewer or admin who sees it: 403
    Row("access-review-decide", "POST", "/access-reviews/{campaign}/decide/", "302 302 404 403 403 403",
        data={"items": "{item}", "decision": "keep", "comment": "still needed"}),
    Row("access-review-reassign", "POST", "/access-reviews/{campaign}/reassign/", "302 403 404 403 403 302",
        data={"item": "{item}", "certifier": "carol"}),
    Row("access-review-report", "GET", "/access-reviews/{campaign}/report.csv", "302 403 404 200 200 200"),
    # --- UI: administration -------------------------------------------------------------------------
    Row("team-list", "GET", "/teams/", "302 403 403 403 403 200"),
    Row("team-list", "POST", "/teams/", "302 403 403 403 403 302", data={"name": "matrix-team"}),
    Row("team-detail", "GET", "/teams/{team}/", "302 403 403 403 403 200"),
    Row("team-detail", "POST", "/teams/{team}/", "302 403 403 403 403 302",
        data={"username": "carol", "role": "member"}),
    Row("policy-list", "GET", "/policies/", "302 403 403 403 403 200"),
    Row("policy-edit", "GET", "/policies/{policy}/", "302 403 403 403 403 200"),
    Row("policy-edit", "POST", "/policies/{policy}/", "302 403 403 403 403 302",
        data={"approvals_required": "1", "approver_groups": "reviewers"}),
    Row("review-rules", "GET", "/review-rules/", "302 403 403 403 403 200"),
    Row("review-rules", "POST", "/review-rules/", "302 403 403 403 403 302",
        data={"environment": "dev", "rule_id": "ddl.truncate", "enabled": "on"}),
    # --- UI: audit ------------------------------------------------------------------------------------
    Row("audit-log", "GET", "/audit/", "302 403 403 403 200 200"),
    Row("audit-event", "GET", "/audit/events/{seq}/", "302 403 403 403 200 200"),
    Row("audit-exports", "GET", "/audit/exports/", "302 403 403 403 200 200"),
    Row("audit-verify-page", "GET", "/audit/verify/", "302 403 403 403 200 200"),
    Row("audit-verify-page", "POST", "/audit/verify/", "302 403 403 403 200 200"),
    Row("audit-archives", "GET", "/audit/archives/", "302 403 403 403 200 200"),
    Row("audit-archive", "GET", "/audit/archives/2000-01/", "302 403 403 403 404 404"),  # no archive of 2000-01
    # SIEM forwarding: platform admins only (a known collector not configured yet can be paused ahead)
    Row("audit-siem", "GET", "/audit/forwarding/", "302 403 403 403 403 200"),
    Row("audit-siem-pause", "POST", "/audit/forwarding/syslog/pause/", "302 403 403 403 403 302",
        data={"reason": "matrix"}),
    Row("audit-siem-resume", "POST", "/audit/forwarding/syslog/resume/", "302 403 403 403 403 302"),
    Row("entitlements", "GET", "/entitlements/", "302 403 403 200 200 200"),
    # --- API --------------------------------------------------------------------------------------------
    Row("api:api-token", "POST", "/api/v1/auth/token/", "403 403 403 403 403 403",
        data={"username": "alice", "password": "not the password"}),
    Row("api:api-schema", "GET", "/api/v1/schema/", "200 200 200 200 200 200"),
    Row("api:api-docs", "GET", "/api/v1/docs/", "200 200 200 200 200 200"),
    Row("api:team-list", "GET", "/api/v1/teams/", "401 200 200 200 200 200"),
    Row("api:team-detail", "GET", "/api/v1/teams/{team}/", "401 200 404 200 200 200"),
    # Group mappings of single sign-on (#17): platform admins only; {mapping} maps a group to requesters.
    Row("api:group-mapping-list", "GET", "/api/v1/identity/group-mappings/", "401 403 403 403 403 200"),
    Row("api:group-mapping-list", "POST", "/api/v1/identity/group-mappings/", "401 403 403 403 403 201",
        data={"group": "matrix-api", "persona": "auditors"}),
    Row("api:group-mapping-detail", "GET", "/api/v1/identity/group-mappings/{mapping}/", "401 403 403 403 403 200"),
    Row("api:group-mapping-detail", "PUT", "/api/v1/identity/group-mappings/{mapping}/", "401 403 403 403 403 200",
        data={"group": "matrix-api", "team": "payments", "role": "lead"}),
    Row("api:group-mapping-detail", "DELETE", "/api/v1/identity/group-mappings/{mapping}/",
        "401 403 403 403 403 204"),
    Row("api:instance-list", "GET", "/api/v1/instances/", "401 200 200 200 200 200"),
    Row("api:instance-list", "POST", "/api/v1/instances/", "401 403 403 403 403 400",
        data={"name": "matrix", "environment": "dev", "host": "10.9.9.9", "admin_user": "postgres"}),
    Row("api:instance-detail", "GET", "/api/v1/instances/{instance}/", "401 200 200 200 200 200"),
    Row("api:instance-promote", "POST", "/api/v1/instances/{instance}/promote/", "401 403 403 403 403 409"),
    Row("api:instance-decommission", "POST", "/api/v1/instances/{instance}/decommission/", "401 403 403 403 403 409"),
    Row("api:request-list", "GET", "/api/v1/requests/", "401 200 200 200 200 200"),
    Row("api:request-list", "POST", "/api/v1/requests/", "401 201 400 403 403 201",
        data={"type": "schema", "instance": "demo", "team": "payments", "justification": "matrix",
              "payload": {"database": "app", "name": "matrix_api_schema"}}),  # dave: 400 on `team`
    Row("api:request-preview", "POST", "/api/v1/requests/preview/", "401 200 400 403 403 200",
        data={"type": "schema", "instance": "demo", "team": "payments", "justification": "matrix",
              "payload": {"database": "app", "name": "matrix_api_schema"}}),
    Row("api:request-detail", "GET", "/api/v1/requests/{request}/", "401 200 404 200 200 200"),
    Row("api:request-approve", "POST", "/api/v1/requests/{request}/approve/", "401 403 404 200 403 200",
        data={"comment": "matrix"}),
    Row("api:request-reject", "POST", "/api/v1/requests/{request}/reject/", "401 403 404 200 403 200",
        data={"comment": "matrix"}),
    Row("api:request-cancel", "POST", "/api/v1/requests/{request}/cancel/", "401 200 404 403 403 403",
        data={"comment": "matrix"}),
    Row("api:request-retry", "POST", "/api/v1/requests/{request}/retry/", "401 403 404 409 403 409",
        data={"comment": "matrix"}),
    Row("api:request-secret", "GET", "/api/v1/requests/{request}/secret/", "401 404 404 403 403 403"),
    Row("api:request-context", "GET", "/api/v1/requests/{request}/context/", "401 403 404 200 403 200"),
    # Auditors read drift findings (read-only), in the API as on the UI's drift page.
    Row("api:drift-list", "GET", "/api/v1/drift/", "401 403 403 200 200 200"),
    # Break-glass (#18): alice passes every check but the schema (absent: 400); reviewers, auditors
    # and admins are no requesters of the team (403); dave cannot name payments (400).
    Row("api:break-glass-list", "GET", "/api/v1/break-glass/", "401 200 200 200 200 200"),
    Row("api:break-glass-list", "POST", "/api/v1/break-glass/", "401 400 400 403 403 403", data=BREAK_GLASS_API),
    Row("api:break-glass-detail", "GET", "/api/v1/break-glass/{request}/", "401 404 404 404 404 404"),
    Row("api:break-glass-review", "POST", "/api/v1/break-glass/{request}/review/", "401 404 404 404 404 404",
        data={"outcome": "acknowledged", "comment": "checked"}),
    Row("api:break-glass-switches", "GET", "/api/v1/break-glass/settings/", "401 200 200 200 200 200"),
    Row("api:break-glass-switches", "POST", "/api/v1/break-glass/settings/", "401 403 403 403 403 200",
        data={"environment": "staging", "enabled": True}),
    Row("api:drift-scan", "POST", "/api/v1/drift/scan/", "401 403 403 200 403 200"),
    Row("api:drift-detail", "GET", "/api/v1/drift/{drift}/", "401 403 403 200 200 200"),
    Row("api:access-review-campaign-list", "GET", "/api/v1/reviews/campaigns/", "401 200 200 200 200 200"),
    Row("api:access-review-campaign-list", "POST", "/api/v1/reviews/campaigns/", "401 403 403 400 403 400",
        data={"name": "m"}),
    Row("api:access-review-campaign-detail", "GET", "/api/v1/reviews/campaigns/{campaign}/",
        "401 200 404 200 200 200"),
    Row("api:access-review-campaign-items", "GET", "/api/v1/reviews/campaigns/{campaign}/items/",
        "401 200 404 200 200 200"),
    Row("api:access-review-campaign-decide", "POST", "/api/v1/reviews/campaigns/{campaign}/decide/",
        "401 200 404 403 403 403", data={"items": ["{item}"], "decision": "keep", "comment": "still needed"}),
    Row("api:access-review-campaign-reassign", "POST", "/api/v1/reviews/campaigns/{campaign}/reassign/",
        "401 403 404 403 403 200", data={"item": "{item}", "certifier": "carol"}),
    Row("api:access-review-campaign-report", "GET", "/api/v1/reviews/campaigns/{campaign}/report/?format=csv",
        "401 403 404 200 200 200"),
    Row("api:drift-acknowledge", "POST", "/api/v1/drift/{drift}/acknowledge/", "401 403 403 200 403 200"),
    # 409: the finding's role belongs to no team of the portal, so there is nothing to file.
    Row("api:drift-revoke", "POST", "/api/v1/drift/{drift}/revoke/", "401 403 403 409 403 409"),
    Row("api:audit-events", "GET", "/api/v1/audit/events/", "401 403 403 403 200 200"),
    Row("api:audit-event-detail", "GET", "/api/v1/audit/events/{seq}/", "401 403 403 403 200 200"),
    Row("api:audit-export", "GET", "/api/v1/audit/export/?format=csv", "401 403 403 403 200 200"),
    Row("api:audit-verify", "GET", "/api/v1/audit/verify/", "401 403 403 403 200 200"),
    Row("api:audit-archives", "GET", "/api/v1/audit/archives/", "401 403 403 403 200 200"),
    Row("api:audit-archive-events", "GET", "/api/v1/audit/archives/2000-01/events/", "401 403 403 403 404 404"),
    Row("api:audit-archive-export", "GET", "/api/v1/audit/archives/2000-01/export/", "401 403 403 403 404 404"),
    Row("api:audit-siem", "GET", "/api/v1/audit/siem/", "401 403 403 403 403 200"),
    Row("api:audit-siem-pause", "POST", "/api/v1/audit/siem/https/pause/", "401 403 403 403 403 200",
        data={"reason": "matrix"}),
    Row("api:audit-siem-resume", "POST", "/api/v1/audit/siem/https/resume/", "401 403 403 403 403 200"),
    Row("api:entitlements", "GET", "/api/v1/entitlements/", "401 403 403 200 200 200"),
    # --- access as code (#22): {change_set} holds {request} (alice's). Anyone sees their own
    # teams' access; a set is seen by whoever sees its requests; a document naming a team that is
    # not the caller's is a 400 (team); only reviewers decide a set, never on their own requests.
    Row("api:access", "GET", "/api/v1/access/", "401 200 200 200 200 200"),
    Row("api:change-set-list", "GET", "/api/v1/change-sets/", "401 200 200 200 200 200"),
    Row("api:change-set-list", "POST", "/api/v1/change-sets/", "401 201 400 400 400 400",
        data={"document": {"instance": "demo", "team": "payments", "roles": [{"name": "matrix_role"}]},
              "justification": "permission matrix"}),
    Row("api:change-set-plan", "POST", "/api/v1/change-sets/plan/", "401 200 400 400 400 400",
        data={"document": {"instance": "demo", "team": "payments"}}),
    Row("api:change-set-detail", "GET", "/api/v1/change-sets/{change_set}/", "401 200 404 200 200 200"),
    Row("api:change-set-approve", "POST", "/api/v1/change-sets/{change_set}/approve/", "401 403 404 200 403 200"),
    Row("api:change-set-reject", "POST", "/api/v1/change-sets/{change_set}/reject/", "401 403 404 200 403 200",
        data={"comment": "no"}),
    # --- identity (#17): own tokens, authenticator, password; admins: users and offboarding ----------
    # {token} is a token of alice; {user} is dave. Each persona sees and revokes only their own
    # tokens (another's is 404); platform admins revoke anyone's and offboard (not dave here: 400).
    Row("token-list", "GET", "/account/tokens/", "302 200 200 200 200 200"),
    Row("token-list", "POST", "/account/tokens/", "302 200 200 200 200 200", data={"name": "matrix"}),
    Row("token-revoke", "POST", "/account/tokens/{token}/revoke/", "302 302 404 404 404 302"),
    Row("mfa-enrol", "GET", "/account/mfa/", "302 200 200 200 200 200"),
    Row("mfa-enrol", "POST", "/account/mfa/", "302 400 400 400 400 400", data={"code": "000000"}),
    Row("mfa-verify", "GET", "/account/mfa/verify/", "302 302 302 302 302 302"),
    Row("mfa-verify", "POST", "/account/mfa/verify/", "302 302 302 302 302 302", data={"code": "000000"}),
    Row("password-change", "GET", "/account/password/", "302 200 200 200 200 200"),
    Row("password-change", "POST", "/account/password/", "302 400 400 400 400 400",
        data={"old_password": "not it", "new_password": "a new long password 123"}),
    Row("user-list", "GET", "/users/", "302 403 403 403 403 200"),
    Row("user-offboard", "GET", "/users/{user}/", "302 403 403 403 403 200"),
    Row("user-offboard", "POST", "/users/{user}/", "302 403 403 403 403 400", data={"reason": "matrix"}),
    Row("api:token-list", "GET", "/api/v1/tokens/", "401 200 200 200 200 200"),
    Row("api:token-list", "POST", "/api/v1/tokens/", "401 201 201 201 201 201", data={"name": "matrix"}),
    Row("api:token-detail", "GET", "/api/v1/tokens/{token}/", "401 200 404 404 404 200"),
    Row("api:token-revoke", "POST", "/api/v1/tokens/{token}/revoke/", "401 200 404 404 404 200"),
    Row("api:user-list", "GET", "/api/v1/users/", "401 403 403 403 403 200"),
    Row("api:user-detail", "GET", "/api/v1/users/{user}/", "401 403 403 403 403 200"),
    Row("api:user-offboarding", "GET", "/api/v1/users/{user}/offboarding/", "401 403 403 403 403 200"),
    Row("api:user-offboard", "POST", "/api/v1/users/{user}/offboard/", "401 403 403 403 403 400", data={}),
    # --- monitoring (#21): every signed-in user reads an instance's monitoring (scoped to their
    # teams' objects unless reviewer, auditor or admin); only platform admins change thresholds.
    Row("instance-monitoring", "GET", "/instances/{instance}/monitoring/", "302 200 200 200 200 200"),
    # --- backups and restore drills (#20): admins, reviewers and auditors read; only platform admins
    # change the policy, take a backup or run a drill (the matrix's instance has no good backup: 409).
    Row("instance-backups", "GET", "/instances/{instance}/backups/", "302 403 403 200 200 200"),
    Row("instance-backups", "POST", "/instances/{instance}/backups/", "302 403 403 403 403 302",
        data={"action": "backup"}),
    Row("api:instance-backup-policy", "GET", "/api/v1/instances/{instance}/backup-policy/", "401 403 403 200 200 200"),
    Row("api:instance-backup-policy", "PUT", "/api/v1/instances/{instance}/backup-policy/", "401 403 403 403 403 200",
        data={"enabled": False, "method": "physical", "interval_hours": 12}),
    Row("api:instance-backups", "GET", "/api/v1/instances/{instance}/backups/", "401 403 403 200 200 200"),
    Row("api:instance-backups", "POST", "/api/v1/instances/{instance}/backups/", "401 403 403 403 403 202"),
    Row("api:instance-drills", "GET", "/api/v1/instances/{instance}/drills/", "401 403 403 200 200 200"),
    Row("api:instance-drills", "POST", "/api/v1/instances/{instance}/drills/", "401 403 403 403 403 409"),
    # the teams' own drill checks (#20): {team_check} is payments' (alice leads it) on schema
    # matrix_checks of demo/app. Everyone who sees the instance lists (their teams' checks only, so dave's
    # list is empty); leads of the owning team and platform admins write; another team's check is a 404.
    Row("instance-team-checks", "GET", "/instances/{instance}/drill-checks/", "302 200 200 200 200 200"),
    Row("instance-team-checks", "POST", "/instances/{instance}/drill-checks/", "302 302 403 403 403 302",
        data={"action": "create", "team": "payments", "database": "app", "name": "matrix-new",
              "sql": "SELECT 1 FROM matrix_checks.t", "expect": "rows"}),
    Row("api:instance-team-checks", "GET", "/api/v1/instances/{instance}/team-checks/", "401 200 200 200 200 200"),
    Row("api:instance-team-checks", "POST", "/api/v1/instances/{instance}/team-checks/", "401 201 403 403 403 201",
        data={"team": "payments", "database": "app", "name": "matrix-new", "sql": "SELECT 1 FROM matrix_checks.t"}),
    Row("api:instance-team-check", "GET", "/api/v1/instances/{instance}/team-checks/{team_check}/",
        "401 200 404 200 200 200"),
    Row("api:instance-team-check", "PUT", "/api/v1/instances/{instance}/team-checks/{team_check}/",
        "401 200 404 403 403 200", data={"expect": "no_rows"}),
    Row("api:instance-team-check", "DELETE", "/api/v1/instances/{instance}/team-checks/{team_check}/",
        "401 204 404 403 403 204"),
    Row("api:instance-monitoring", "GET", "/api/v1/instances/{instance}/monitoring/", "401 200 200 200 200 200"),
    Row("api:instance-monitoring-series", "GET", "/api/v1/instances/{instance}/monitoring/series/?hours=6",
        "401 200 200 200 200 200"),
    Row("api:instance-monitoring-thresholds", "GET", "/api/v1/instances/{instance}/monitoring/thresholds/",
        "401 200 200 200 200 200"),
    Row("api:instance-monitoring-thresholds", "PUT", "/api/v1/instances/{instance}/monitoring/thresholds/",
        "401 403 403 403 403 200", data={"kind": "wraparound", "value": 1000000000}),
    # data dictionary (#21): every signed-in user reads and searches it; {instance} has no snapshot
    # in the matrix's world, so a database's dictionary is a 404 and a comment edit a 400 naming the
    # database (tests/portal/test_dictionary.py covers them on a real snapshot, 403 for non-members).
    Row("api:instance-dictionary", "GET", "/api/v1/instances/{instance}/dictionary/", "401 200 200 200 200 200"),
    Row("api:instance-dictionary-database", "GET", "/api/v1/instances/{instance}/dictionary/app/",
        "401 404 404 404 404 404"),
    Row("api:instance-dictionary-history", "GET", "/api/v1/instances/{instance}/dictionary/app/history/",
        "401 200 200 200 200 200"),
    Row("api:instance-dictionary-hints", "GET", "/api/v1/instances/{instance}/dictionary/app/hints/",
        "401 404 404 404 404 404"),
    Row("api:instance-dictionary-comment", "POST", "/api/v1/instances/{instance}/dictionary/app/comment/",
        "401 400 400 400 400 400", data={"schema": "s", "table": "t", "comment": "c", "justification": "matrix"}),
    Row("api:dictionary-search", "GET", "/api/v1/dictionary/search/?q=app", "401 200 200 200 200 200"),
    Row("instance-dictionary", "GET", "/instances/{instance}/dictionary/", "302 200 200 200 200 200"),
    Row("dictionary-search", "GET", "/dictionary/?q=app", "302 200 200 200 200 200"),
    Row("instance-threshold-set", "POST", "/instances/{instance}/monitoring/thresholds/", "302 403 403 403 403 302",
        data={"kind": "wraparound", "value": "1000000000", "action": "set"}),
]

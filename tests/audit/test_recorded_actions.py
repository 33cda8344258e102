"""Every action that exists today lands in the log exactly once, with the right actor.

Other areas add their rows (requests, provisioning, drift) next to their own tests; the audit
tables outlive transactional tests, so each case looks only at events after its own start.
"""

from __future__ import annotations

from django.core.management import call_command
from django.urls import reverse

from audit.models import AuditEvent, AuditHead
from tests.fixtures.people import PASSWORD


def _since(start: int):
    return AuditEvent.objects.filter(seq__gt=start)


def _start() -> int:
    return AuditHead.objects.get(pk=1).seq


def test_api_login_and_failed_login(people, client):
    start = _start()
    client.post("/api/v1/auth/token/", {"username": "dave", "password": PASSWORD}, content_type="application/json")
    client.post("/api/v1/auth/token/", {"username": "dave", "password": "wrong"}, content_type="application/json")
    events = list(_since(start).values_list("action", "actor", "outcome"))
    # the sign-in, the named token it issued (#17), the refusal
    assert events == [("auth.login", "dave", "ok"), ("token.created", "dave", "ok"),
                      ("auth.login_failed", "dave", "failed")]
    assert not any(PASSWORD in str(e.details) + e.statement for e in _since(start))


def test_web_login_is_recorded_once(people, client):
    start = _start()
    client.post(reverse("login"), {"username": "bob", "password": PASSWORD})
    assert list(_since(start).values_list("action", "actor")) == [("auth.login", "bob")]


def test_instance_registration_is_recorded_with_the_admin(people, api_for, managed_cluster):
    start = _start()
    body = {"name": "ext-audit", "environment": "staging", "host": "127.0.0.1", "port": managed_cluster.port,
            "database": "postgres", "admin_user": "postgres", "admin_password": managed_cluster.admin_password}
    assert api_for("admin").post("/api/v1/instances/", body, format="json").status_code == 201
    events = list(_since(start))
    assert [(e.action, e.actor, e.instance) for e in events] == [("instance.registered", "admin", "ext-audit")]
    assert managed_cluster.admin_password not in str(events[0].details)


def test_verification_and_exports_are_recorded_with_the_auditor(people, api_for):
    start = _start()
    client = api_for("carol")
    client.get("/api/v1/audit/verify/")
    for export_format in ("csv", "jsonl", "pdf"):
        response = client.get(f"/api/v1/audit/export/?format={export_format}&action=auth.login")
        b"".join(response.streaming_content)
    events = list(_since(start).values_list("action", "actor", "details__format"))
    assert events == [("audit.verified", "carol", None), ("audit.exported", "carol", "csv"),
                      ("audit.exported", "carol", "jsonl"), ("audit.exported", "carol", "pdf")]


def test_verify_command_is_recorded_as_system(db):
    start = _start()
    call_command("audit_verify")
    assert list(_since(start).values_list("action", "actor")) == [("audit.verified", "system")]


def test_key_rotation_is_recorded_as_system(db):
    start = _start()
    call_command("rotate_fernet_keys")
    assert list(_since(start).values_list("action", "actor")) == [("keys.rotated", "system")]


def test_sign_out_is_recorded_with_the_user(people, client):
    # given bob signed in on the web
    client.post(reverse("login"), {"username": "bob", "password": PASSWORD})
    start = _start()
    # when he signs out
    response = client.post(reverse("logout"))
    # then one auth.logout names him, and the session is over
    assert response.status_code == 302
    assert list(_since(start).values_list("action", "actor", "outcome")) == [("auth.logout", "bob", "ok")]
    assert client.get("/api/v1/requests/").status_code in (401, 403)


def test_a_lock_out_is_its_own_event_not_one_more_failed_sign_in(people, client, settings):
    # given the lock-out threshold of django-axes
    limit = settings.AXES_FAILURE_LIMIT
    start = _start()
    # when a name keeps failing from one address, past the threshold
    for _ in range(limit + 1):
        client.post(reverse("login"), {"username": "carol", "password": "wrong"})
    # then the failures before the threshold are auth.login_failed and the lock-out is auth.locked_out
    actions = list(_since(start).values_list("action", "outcome"))
    assert actions[: limit - 1] == [("auth.login_failed", "failed")] * (limit - 1)
    assert ("auth.locked_out", "locked") in actions[limit - 1:]
    assert all(action in ("auth.login_failed", "auth.locked_out") for action, _ in actions)
    # and even the right password is refused while locked, recorded as a lock-out
    seen = _start()
    client.post(reverse("login"), {"username": "carol", "password": PASSWORD})
    assert list(_since(seen).values_list("action", flat=True)) == ["auth.locked_out"]


def test_every_read_of_audit_data_is_recorded_with_its_filters(people, api_for, web_for):
    # given carol, an auditor
    api, web = api_for("carol"), web_for("carol")
    start = _start()
    # when she reads the log (API and page, filtered), one event (API and page) and who can access what
    assert api.get("/api/v1/audit/events/", {"action": "auth.login", "page_size": 5}).status_code == 200
    assert web.get("/audit/", {"actor": "bob"}).status_code == 200
    seq = _since(start).order_by("seq").values_list("seq", flat=True).first()
    assert api.get(f"/api/v1/audit/events/{seq}/").status_code == 200
    assert web.get(f"/audit/events/{seq}/").status_code == 200
    assert api.get("/api/v1/entitlements/", {"role": "nobody"}).status_code == 200
    assert web.get("/entitlements/", {"schema": "none"}).status_code == 200
    # then each read is one audit.viewed event naming her, what she read and the filters she used
    viewed = list(_since(start).filter(action="audit.viewed").order_by("seq")
                  .values_list("actor", "outcome", "object_id", "details"))
    assert [(actor, outcome) for actor, outcome, _, _ in viewed] == [("carol", "ok")] * 6
    assert [d["view"] for _, _, _, d in viewed] == ["log", "log", "event", "event", "entitlements", "entitlements"]
    assert viewed[0][3]["filters"] == {"action": "auth.login", "page_size": "5"}
    assert viewed[1][3]["filters"] == {"actor": "bob"}
    assert viewed[2][2] == str(seq) and viewed[3][2] == str(seq)
    assert viewed[4][3]["filters"] == {"role": "nobody"} and viewed[5][3]["filters"] == {"schema": "none"}


def test_a_refused_access_is_recorded_with_who_where_and_why(people, api_for, client):
    # given a requester, an anonymous caller and a signed-in browser without a CSRF token
    start = _start()
    # when alice asks for the audit log (403), nobody signed in asks for requests (401),
    assert api_for("alice").get("/api/v1/audit/events/").status_code == 403
    assert client.get("/api/v1/requests/").status_code == 401
    # then each refusal is one access.denied event naming the caller, the route and the status
    denied = list(_since(start).filter(action="access.denied").order_by("seq")
                  .values_list("actor", "object_id", "outcome", "details"))
    assert denied == [
        ("alice", "/api/v1/audit/events/", "denied", {"method": "GET", "status": 403}),
        ("anonymous", "/api/v1/requests/", "denied", {"method": "GET", "status": 401}),
    ]

"""A/B (#23, outside the test suite: timings): the dashboard computed from the request counters and
kept medians (new) against counting the requests of its 14 days (old: the path a user who does not
see every request takes, the same figures), and the admin's team list from its counters against
counting each team's requests, with 1k and then 50k requests in the window, alternating in one
process; a write cost A/B (triggers on and off) and the backfill's time. Run against the test
database (real PostgreSQL, the suite's fixtures):

    PORTAL_VAR_DIR=var/test-$USER DJANGO_SETTINGS_MODULE=portal.settings.test \
    BENCH_APPLIED=1 BENCH_SPREAD=1 .venv/bin/python -c "import django, sys; django.setup(); import pytest; \
      sys.exit(pytest.main(['bench/dashboard_ab.py', '-c', 'pyproject.toml', '-p', 'tests.conftest', '-q', '-s', \
      '-p', 'no:randomly']))"

BENCH_APPLIED=1: applied requests have applied_at (the medians read them); BENCH_SPREAD=1 spreads
the requests over the 14 days, 0.0001 files them within minutes as bench/scale.py does."""
import importlib
import os
import statistics
import time

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

import portal.selectors.dashboard as dash
import portal.views.home as home_view
from portal.choices import RequestStatus
from portal.models import ChangeRequest
from tests.portal.ui_helpers import dev_instance, given_request

# n requests, 60% applied (with applied_at = created_at + 20 minutes when %(applied)s), created
# within the last 14 days x %(spread)s.
FILL = """
INSERT INTO portal_changerequest (type, instance_id, team_id, requester_id, justification, payload, plan, plan_hash,
  risk, risk_reasons, findings, status, status_detail, created_at, updated_at, applied_at, break_glass)
SELECT 'grant', %(instance)s, %(team)s, %(user)s, 'bench', '{}'::jsonb, '[]'::jsonb, repeat('0', 64), 'low',
  '[]'::jsonb, '[]'::jsonb, s.status, '', s.created, s.created,
  CASE WHEN s.status = 'applied' AND %(applied)s THEN s.created + interval '20 minutes' END, false
FROM (SELECT (ARRAY['applied', 'applied', 'applied', 'applied', 'applied', 'applied', 'rejected', 'failed',
                    'submitted', 'cancelled'])[1 + g %% 10] AS status,
             now() - random() * interval '14 days' * %(spread)s AS created
      FROM generate_series(1, %(n)s) AS g) AS s
"""


def old_team_list_with_members():
    """The team list before TeamRequestCount: each team's requests counted."""
    from django.db.models import Count, OuterRef, Prefetch, Subquery
    from django.db.models.functions import Coalesce

    from portal.models import Membership, Team
    members = Prefetch("memberships", queryset=Membership.objects.select_related("user").order_by("user__username"))
    requests = (ChangeRequest.objects.filter(team=OuterRef("pk")).order_by().values("team")
                .annotate(n=Count("*")).values("n"))
    return (Team.objects.annotate(request_count=Coalesce(Subquery(requests), 0))
            .prefetch_related(members).order_by("name"))


def timed(fn, runs=15) -> float:
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return statistics.median(out)


def test_ab(people, monkeypatch):
    applied = os.environ.get("BENCH_APPLIED", "0") == "1"
    spread = float(os.environ.get("BENCH_SPREAD", "1"))
    dev = dev_instance()
    seed = given_request(requester=people["alice"], instance=dev)
    admin = people["admin"]
    client = Client()
    client.force_login(admin)
    params = {"instance": dev.pk, "team": seed.team_id, "user": people["alice"].pk, "applied": applied,
              "spread": spread}
    results: dict = {}
    real_sees, real_teams = dash.sees_everything, home_view.team_list_with_members

    def old() -> None:  # the live counts and medians, the counted team list
        monkeypatch.setattr(dash, "sees_everything", lambda user: False)
        monkeypatch.setattr(home_view, "team_list_with_members", old_team_list_with_members)

    def new() -> None:
        monkeypatch.setattr(dash, "sees_everything", real_sees)
        monkeypatch.setattr(home_view, "team_list_with_members", real_teams)

    have = 0
    for size in (1000, 50000):
        with connection.cursor() as cursor:
            cursor.execute(FILL, {**params, "n": size - have})
            cursor.execute("ANALYZE portal_changerequest")
        have = size
        new()
        new_figures = dash.dashboard_data(admin)
        old()
        assert dash.dashboard_data(admin) == new_figures  # the same numbers
        for _ in range(5):  # alternating
            for label, use in (("old", old), ("new", new)):
                use()
                results.setdefault((label, "data", size), []).append(timed(lambda: dash.dashboard_data(admin)))
                results.setdefault((label, "page", size), []).append(timed(lambda: client.get(reverse("home")), 9))
        new()
        with CaptureQueriesContext(connection) as queries:
            client.get(reverse("home"))
        print(f"\n{size} requests: the admin home's {len(queries)} queries, slowest "
              f"{max(float(q['time']) for q in queries.captured_queries) * 1000:.1f} ms")
    print(f"applied_at set: {applied}, spread factor {spread}")
    for what in ("data", "page"):
        for label in ("old", "new"):
            small = statistics.median(results[(label, what, 1000)])
            large = statistics.median(results[(label, what, 50000)])
            print(f"{what:4} {label}: 1k {small:7.2f} ms  50k {large:7.2f} ms  growth {large / small:5.2f}x")


def test_write_cost(people):
    """A/B: a request filed and moved through three statuses (4 statements) with the triggers on
    and off (session_replication_role: foreign keys' triggers off too), alternating."""
    dev = dev_instance()
    results: dict[str, list[float]] = {"on": [], "off": []}

    def one() -> None:
        request = given_request(requester=people["alice"], instance=dev)
        for status in (RequestStatus.QUEUED, RequestStatus.RUNNING, RequestStatus.APPLIED):
            ChangeRequest.objects.filter(pk=request.pk).update(status=status)

    for _ in range(5):
        for mode in ("on", "off"):
            with connection.cursor() as cursor:
                if mode == "on":
                    cursor.execute("SET session_replication_role = origin")
                else:
                    cursor.execute("SET session_replication_role = replica")
            results[mode].append(timed(one, 40))
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = origin")
    on, off = statistics.median(results["on"]), statistics.median(results["off"])
    print(f"\nfile + 3 status changes: triggers on {on:.2f} ms, off {off:.2f} ms ({on / off:.2f}x)")


def test_backfill_time(people):
    backfill = importlib.import_module("portal.migrations.0022_request_counts").BACKFILL
    dev = dev_instance()
    seed = given_request(requester=people["alice"], instance=dev)
    out = []
    with connection.cursor() as cursor:
        cursor.execute(FILL, {"instance": dev.pk, "team": seed.team_id, "user": people["alice"].pk, "applied": True,
                              "spread": 30, "n": 100000})
        cursor.execute("ANALYZE portal_changerequest")
        for _ in range(3):
            cursor.execute("DELETE FROM portal_requestcount")
            cursor.execute("DELETE FROM portal_teamrequestcount")
            began = time.perf_counter()
            cursor.execute(backfill)
            out.append(time.perf_counter() - began)
        cursor.execute("SELECT count(*) FROM portal_requestcount")
        rows = cursor.fetchone()[0]
    print(f"\nbackfill of 100k requests over 420 days: {statistics.median(out) * 1000:.0f} ms ({rows} slot rows)")

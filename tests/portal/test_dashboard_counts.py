"""The dashboard's requests per day and status come from RequestCount's 15-minute slots, and the
admin's requests per team from TeamRequestCount, both kept by triggers (#23): the same figures as
counting the requests themselves, for days and states mixed, in time zones with odd offsets, after
status and team changes, bulk inserts, deletes and concurrent writers; and a number of queries that
does not grow with the requests."""

from __future__ import annotations

import importlib
import threading
import time as time_module
from datetime import datetime, time, timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Sum
from django.db.models.functions import Extract, TruncDate
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from portal.choices import RequestStatus
from portal.models import ChangeRequest, RequestCount, RequestCountDelta, RequestMedianDay, Team, TeamRequestCount
from portal.selectors.admin import team_list_with_members
from portal.selectors.dashboard import DAYS, Median, dashboard_data, fold_request_counts
from tests.portal.ui_helpers import dev_instance, given_request

backfill = importlib.import_module("portal.migrations.0022_request_counts").BACKFILL


def direct_counts(requests=None, days: int = DAYS) -> dict[str, list[int]]:
    """The figures counted from the requests, as the dashboard did before RequestCount."""
    today = timezone.localdate()
    start = today - timedelta(days=days - 1)
    since = timezone.make_aware(datetime.combine(start, time.min))
    day_list = [start + timedelta(days=i) for i in range(days)]
    counts = {s: [0] * days for s in RequestStatus.values}
    requests = ChangeRequest.objects.all() if requests is None else requests
    rows = (requests.filter(created_at__gte=since).annotate(day=TruncDate("created_at"))
            .values("day", "status").annotate(n=Count("*")).order_by())
    for row in rows:
        if row["day"] in day_list:
            counts[row["status"]][day_list.index(row["day"])] += row["n"]
    return {s: c for s, c in counts.items() if any(c)}


def direct_medians(days: int = DAYS) -> tuple[list[float | None], int]:
    """The medians per day and the applied total computed from the requests, as before RequestMedianDay."""
    today = timezone.localdate()
    start = today - timedelta(days=days - 1)
    since = timezone.make_aware(datetime.combine(start, time.min))
    day_list = [start + timedelta(days=i) for i in range(days)]
    minutes = Extract(ExpressionWrapper(F("applied_at") - F("created_at"), output_field=DurationField()),
                      "epoch") / 60.0
    rows = (ChangeRequest.objects.filter(status=RequestStatus.APPLIED, applied_at__gte=since)
            .annotate(day=TruncDate("applied_at")).values("day").annotate(n=Count("*"), median=Median(minutes))
            .order_by())
    medians: list[float | None] = [None] * days
    total = 0
    for row in rows:
        if row["day"] in day_list:
            medians[day_list.index(row["day"])] = round(row["median"], 1)
            total += row["n"]
    return medians, total


def shown_medians(user) -> tuple[list[float | None], int]:
    data = dashboard_data(user)
    return data["median_minutes"], data["totals"]["applied"]


def assert_team_counts() -> None:
    shown = {team.name: team.request_count for team in team_list_with_members()}
    assert all(type(n) is int for n in shown.values())
    counted = dict(Team.objects.annotate(n=Count("requests")).values_list("name", "n"))
    assert shown == counted and any(shown.values())


def filed_at(request: ChangeRequest, when: datetime) -> None:
    # created_at is auto_now_add: moved afterwards with an UPDATE, which the triggers follow too
    ChangeRequest.objects.filter(pk=request.pk).update(created_at=when)


def local_midnight(days_ago: int) -> datetime:
    return timezone.make_aware(datetime.combine(timezone.localdate() - timedelta(days=days_ago), time.min))


@pytest.fixture
def mixed(people):
    """Requests on many days and in every state, some just either side of a local midnight, some
    before the window and one in the future."""
    dev = dev_instance()
    statuses = RequestStatus.values
    made = []
    for n, days_ago in enumerate([0, 0, 1, 2, 2, 3, 5, 8, 13, 13, 14, 20]):
        request = given_request(requester=people["alice"], instance=dev, status=statuses[n % len(statuses)])
        filed_at(request, local_midnight(days_ago) + timedelta(hours=(n * 5) % 24, minutes=n))
        made.append(request)
    for days_ago in (0, 1, 13):
        # the last microsecond of the day before and the first of this day
        before = given_request(requester=people["alice"], instance=dev, status="applied")
        filed_at(before, local_midnight(days_ago) - timedelta(microseconds=1))
        at = given_request(requester=people["alice"], instance=dev, status="rejected")
        filed_at(at, local_midnight(days_ago))
        made += [before, at]
    future = given_request(requester=people["alice"], instance=dev, status="submitted")
    filed_at(future, local_midnight(-2))
    return made + [future]


def test_the_figures_are_a_direct_count(people, mixed):
    data = dashboard_data(people["admin"])
    assert data["per_status"] == direct_counts()
    assert data["totals"]["requests"] == sum(sum(c) for c in direct_counts().values())
    assert len(data["per_status"]) >= 6  # the mix covers most states


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Australia/Eucla",
                                  "Pacific/Kiritimati"])
def test_the_figures_are_a_direct_count_in_other_time_zones(people, mixed, zone):
    # offsets of +5:30, +5:45, -3:30 (with summer time), +8:45 and +14: days that start off the UTC hour
    with timezone.override(zone):
        assert dashboard_data(people["admin"])["per_status"] == direct_counts()
        request = given_request(requester=people["alice"], instance=mixed[0].instance, status="failed")
        filed_at(request, local_midnight(3) - timedelta(microseconds=1))
        assert dashboard_data(people["admin"])["per_status"] == direct_counts()


def test_a_state_change_moves_the_counts(people, mixed):
    submitted = [r for r in mixed if r.status == "submitted" and r.created_at < timezone.now()]
    request = ChangeRequest.objects.get(pk=submitted[0].pk)
    day = data_index(timezone.localtime(request.created_at).date())
    before = dashboard_data(people["admin"])["per_status"]
    # when one request is approved through save() and two are cancelled by one UPDATE
    request.status = RequestStatus.APPROVED
    request.save(update_fields=["status", "updated_at"])
    after = dashboard_data(people["admin"])["per_status"]
    assert after["submitted"][day] == before["submitted"][day] - 1
    assert after["approved"][day] == before.get("approved", [0] * DAYS)[day] + 1
    ChangeRequest.objects.filter(pk__in=[r.pk for r in mixed[:6]]).update(status=RequestStatus.CANCELLED)
    assert dashboard_data(people["admin"])["per_status"] == direct_counts()
    # and a bulk insert and a delete are counted too
    ChangeRequest.objects.bulk_create([ChangeRequest(
        type="grant", instance=request.instance, team=request.team, requester=request.requester, justification="x",
        plan_hash="0" * 64, status=status) for status in ("submitted", "applied", "applied")])
    ChangeRequest.objects.filter(pk=mixed[-2].pk).delete()
    assert dashboard_data(people["admin"])["per_status"] == direct_counts()
    assert_team_counts()
    # a request moved to another team moves its count; a team without requests can be deleted
    ChangeRequest.objects.filter(pk=mixed[0].pk).update(team=people["dave"].teams.first())
    assert_team_counts()
    empty = Team.objects.create(name="short-lived")
    moved = ChangeRequest.objects.filter(pk=mixed[1].pk)
    moved.update(team=empty)
    moved.delete()
    assert_team_counts()
    empty.delete()
    assert_team_counts()
    # updates that change neither day nor status leave the counters alone
    fold_request_counts()
    slots = list(RequestCount.objects.order_by("slot", "status").values_list("slot", "status", "n"))
    ChangeRequest.objects.update(status_detail="touched")
    assert not RequestCountDelta.objects.exists()
    assert list(RequestCount.objects.order_by("slot", "status").values_list("slot", "status", "n")) == slots


def data_index(day) -> int:
    return [timezone.localdate() - timedelta(days=DAYS - 1 - i) for i in range(DAYS)].index(day)


def test_the_backfill_counts_every_request(people, mixed):
    # what migration 0022 runs once over the requests filed before it
    RequestCount.objects.all().delete()
    RequestCountDelta.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(backfill)
    assert dashboard_data(people["admin"])["per_status"] == direct_counts()
    assert RequestCount.objects.aggregate(n=Sum("n"))["n"] == ChangeRequest.objects.count()
    TeamRequestCount.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(backfill)  # twice: the slots add up again, the teams from nothing
    assert RequestCount.objects.aggregate(n=Sum("n"))["n"] == 2 * ChangeRequest.objects.count()
    assert_team_counts()


def test_deleting_every_request_and_a_team_folds_to_nothing(people, mixed):
    team = Team.objects.create(name="short-lived")
    ChangeRequest.objects.filter(pk=mixed[0].pk).update(team=team)
    fold_request_counts()
    ChangeRequest.objects.all().delete()
    team.delete()  # its counter goes with it; its deltas (the delete's) are dropped by the fold
    fold_request_counts()
    assert not RequestCountDelta.objects.exists()
    assert set(RequestCount.objects.values_list("n", flat=True)) <= {0}
    assert set(TeamRequestCount.objects.values_list("n", flat=True)) <= {0}
    assert dashboard_data(people["admin"])["per_status"] == {}


def test_a_user_who_sees_only_a_team_gets_the_same_rule_from_the_requests(people, mixed):
    # alice (a developer) sees her team's requests only: counted from them, not from the slots
    other_team = given_request(requester=people["alice"], instance=mixed[0].instance, status="applied")
    ChangeRequest.objects.filter(pk=other_team.pk).update(
        team=people["dave"].teams.exclude(pk__in=people["alice"].teams.all()).first(), requester=people["dave"])
    assert_team_counts()
    mine = direct_counts(ChangeRequest.objects.restrict(people["alice"], "view"))
    assert dashboard_data(people["alice"])["per_status"] == mine != direct_counts()
    assert dashboard_data(people["admin"])["per_status"] == direct_counts()


def test_the_dashboard_reads_a_fixed_number_of_queries(web_for, people, mixed, django_assert_max_num_queries):
    client = web_for("admin")
    client.get(reverse("home"))  # sessions, persona caches
    # session, user, groups; the fold, the slots, the kept days' medians, today's, open drift; the
    # session's save (3). The home page before kept the closed days' medians.
    with django_assert_max_num_queries(11):
        assert client.get(reverse("dashboard-data")).status_code == 200
    with CaptureQueriesContext(connection) as home:
        client.get(reverse("home"))
    ChangeRequest.objects.bulk_create([ChangeRequest(
        type="grant", instance=mixed[0].instance, team=mixed[0].team, requester=mixed[0].requester,
        justification="x", plan_hash="0" * 64, status=status) for status in ("applied", "submitted") * 150])
    with django_assert_max_num_queries(11):
        data = client.get(reverse("dashboard-data")).json()
    assert data["per_status"] == direct_counts() and (data["median_minutes"], data["totals"]["applied"]) == \
        direct_medians()
    # the admin's home (queue, charts, drift, instances, teams with their counts): no more queries
    with django_assert_max_num_queries(len(home)):
        client.get(reverse("home"))


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_lose_no_count(people):
    """Writers in the same slot and status at once: each appends its deltas, and the fold adds them
    (n = n + excluded.n), so none overwrites another."""
    dev = dev_instance()
    seed = given_request(requester=people["alice"], instance=dev)
    holding, go = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                given_request(requester=people["alice"], instance=dev)
                ChangeRequest.objects.filter(pk=seed.pk).update(status=RequestStatus.APPROVED)
                holding.set()  # holds the (slot, submitted) and (slot, approved) counters until commit
                go.wait(30)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
        finally:
            holding.set()
            connection.close()

    def second() -> None:
        try:
            holding.wait(30)
            with transaction.atomic():
                given_request(requester=people["alice"], instance=dev)
                given_request(requester=people["alice"], instance=dev, status="approved")
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    holding.wait(30)
    go.set()  # the second writer is waiting on the first's counters, or about to
    for thread in threads:
        thread.join(60)
    assert not errors
    fold_request_counts()
    assert dict(RequestCount.objects.values_list("status").annotate(n=Sum("n"))) == {"submitted": 2, "approved": 2}
    assert dashboard_data(people["admin"])["per_status"] == direct_counts()
    assert_team_counts()


@pytest.fixture
def applied_mix(people):
    """Applied requests over the window (several a day, around midnights, one before it), and
    requests in other states with applied_at set (which no median counts)."""
    dev = dev_instance()
    made = []
    for n, days_ago in enumerate([0, 0, 1, 1, 1, 2, 4, 4, 7, 12, 13, 13, 14, 30]):
        applied_at = local_midnight(days_ago) + timedelta(hours=(n * 7) % 24, minutes=n)
        request = given_request(requester=people["alice"], instance=dev, status="applied")
        ChangeRequest.objects.filter(pk=request.pk).update(
            created_at=applied_at - timedelta(minutes=5 + 13 * n), applied_at=applied_at)
        made.append(request)
    for days_ago in (1, 13):
        edge = given_request(requester=people["alice"], instance=dev, status="applied")
        ChangeRequest.objects.filter(pk=edge.pk).update(
            created_at=local_midnight(days_ago) - timedelta(hours=3), applied_at=local_midnight(days_ago))
        made.append(edge)
    failed = given_request(requester=people["alice"], instance=dev, status="failed")
    ChangeRequest.objects.filter(pk=failed.pk).update(applied_at=local_midnight(2) + timedelta(hours=1))
    return made


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu", "America/St_Johns", "Pacific/Kiritimati"])
def test_the_medians_are_computed_from_the_requests_and_kept_for_closed_days(people, applied_mix, zone):
    with timezone.override(zone):
        assert shown_medians(people["admin"]) == direct_medians()
        # closed days are kept (today is not), and the next dashboard reads them back
        kept = set(RequestMedianDay.objects.filter(zone=zone).values_list("day", flat=True))
        assert len(kept) == DAYS - 1 and timezone.localdate() not in kept
        assert shown_medians(people["admin"]) == direct_medians()


def test_a_change_to_an_applied_request_drops_its_days(people, applied_mix):
    admin = people["admin"]
    assert shown_medians(admin) == direct_medians()
    # a request applied two days ago fails after all (its status), another's times are corrected,
    # a third is deleted, and one applied 5 days ago is filed again (bulk insert)
    ChangeRequest.objects.filter(pk=applied_mix[5].pk).update(status=RequestStatus.FAILED)
    assert shown_medians(admin) == direct_medians()
    ChangeRequest.objects.filter(pk=applied_mix[3].pk).update(applied_at=F("applied_at") + timedelta(hours=2))
    assert shown_medians(admin) == direct_medians()
    ChangeRequest.objects.filter(pk=applied_mix[9].pk).delete()
    assert shown_medians(admin) == direct_medians()
    source = applied_mix[6]
    ChangeRequest.objects.bulk_create([ChangeRequest(
        type="grant", instance=source.instance, team=source.team, requester=source.requester, justification="x",
        plan_hash="0" * 64, status="applied", applied_at=local_midnight(5) + timedelta(hours=2))])
    assert shown_medians(admin) == direct_medians()
    # a change that moves no applied request keeps every kept day
    kept = RequestMedianDay.objects.count()
    ChangeRequest.objects.update(status_detail="touched")
    given_request(requester=people["alice"], instance=source.instance)
    assert RequestMedianDay.objects.count() == kept


def test_the_medians_of_a_user_who_sees_only_a_team_are_computed(people, applied_mix):
    # alice sees only her team's requests: every day computed from them, nothing kept
    assert shown_medians(people["alice"]) == direct_medians()
    assert not RequestMedianDay.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_fill_waits_for_a_writer_of_applied_requests(people):
    """A writer has changed a request applied yesterday and not committed; a dashboard computing
    yesterday's median waits for it (the advisory lock), then keeps the median with the change."""
    dev = dev_instance()
    applied = []
    for minutes in (10, 20, 30):
        request = given_request(requester=people["alice"], instance=dev, status="applied")
        ChangeRequest.objects.filter(pk=request.pk).update(
            created_at=local_midnight(1) + timedelta(hours=1), applied_at=local_midnight(1) + timedelta(hours=1,
                                                                                                       minutes=minutes))
        applied.append(request)
    changed, go = threading.Event(), threading.Event()
    seen: list = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with transaction.atomic():
                ChangeRequest.objects.filter(pk=applied[0].pk).update(status=RequestStatus.FAILED)
                changed.set()
                go.wait(30)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
        finally:
            changed.set()
            connection.close()

    def dashboard() -> None:
        try:
            seen.append(shown_medians(people["admin"]))
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer), threading.Thread(target=dashboard)]
    threads[0].start()
    changed.wait(30)
    threads[1].start()
    # until the dashboard waits on the lock (pg_stat_activity), then the writer commits
    with connection.cursor() as cursor:
        for _ in range(3000):
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND wait_event = 'advisory' AND datname = current_database()")
            if cursor.fetchone()[0]:
                break
            time_module.sleep(0.01)
        else:
            pytest.fail("the dashboard never waited for the writer")
    go.set()
    for thread in threads:
        thread.join(60)
    assert not errors
    yesterday = data_index(timezone.localdate() - timedelta(days=1))
    assert seen[0][0][yesterday] == 25.0 == direct_medians()[0][yesterday]  # the median of 20 and 30
    assert shown_medians(people["admin"]) == direct_medians()


def _waiting_or_done(thread: threading.Thread) -> None:
    """Until `thread` has finished or waits on a lock in PostgreSQL."""
    with connection.cursor() as cursor:
        for _ in range(3000):
            if not thread.is_alive():
                return
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND datname = current_database()")
            if cursor.fetchone()[0]:
                return
            time_module.sleep(0.01)


@pytest.mark.django_db(transaction=True)
def test_two_statuses_of_one_slot_changed_in_opposite_orders_do_not_deadlock(people):
    """A submit that auto-approves (INSERT submitted, then submitted -> queued) against a reviewer's
    approval of another request of the same 15 minutes (submitted -> queued in one statement):
    with counters upserted by the writers (the first design) each waited for the other's counter row."""
    dev = dev_instance()
    other = given_request(requester=people["alice"], instance=dev)
    inserted, approving, errors = threading.Event(), threading.Event(), []

    def submit() -> None:
        try:
            with transaction.atomic():
                mine = given_request(requester=people["alice"], instance=dev)
                inserted.set()
                approving.wait(30)
                _waiting_or_done(approver)  # the approval ran, or waits on this transaction
                ChangeRequest.objects.filter(pk=mine.pk).update(status=RequestStatus.QUEUED)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
        finally:
            inserted.set()
            connection.close()

    def approve() -> None:
        try:
            inserted.wait(30)
            with transaction.atomic():
                approving.set()
                ChangeRequest.objects.filter(pk=other.pk).update(status=RequestStatus.QUEUED)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finally:
            approving.set()
            connection.close()

    approver = threading.Thread(target=approve)
    submitter = threading.Thread(target=submit)
    submitter.start()
    inserted.wait(30)
    approver.start()
    for thread in (submitter, approver):
        thread.join(60)
    assert not errors, errors
    assert dashboard_data(people["admin"])["per_status"] == direct_counts() and "submitted" not in direct_counts()


def test_beat_folds_the_deltas(people, mixed):
    from portal.celery import beat_schedule
    from portal.tasks import fold_request_counts_task

    assert RequestCountDelta.objects.exists()
    assert beat_schedule()["requests.fold_counts"]["task"] == fold_request_counts_task.name
    fold_request_counts_task()
    assert not RequestCountDelta.objects.exists()
    assert dashboard_data(people["admin"])["per_status"] == direct_counts()

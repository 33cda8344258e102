"""Change requests and their execution attempts."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import Case, F, Func, IntegerField, Q, TextField, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Concat, Lower

from portal.choices import RISK_ORDER, RequestStatus, RequestType, Risk
from portal.models.team import Membership
from portal.querysets import RestrictedQuerySet


def risk_rank() -> Case:
    """A request's risk as a number (low 0, medium 1, high 2): the review queue's first sort key.

    One expression for the queue's ORDER BY and its index (request_pending_idx below): PostgreSQL
    uses an expression index only for the same expression."""
    return Case(*[When(risk=risk, then=Value(order)) for risk, order in RISK_ORDER.items()],
                output_field=IntegerField())


class ChangeRequestQuerySet(RestrictedQuerySet):
    @staticmethod
    def _team_policy(qs, user, action):
        if action == "view":
            # The requester, the team's members, and the members of the team owning the schema a
            # grant touches (its lead approves cross-team access). The teams as an IN subquery, not
            # joins: no duplicate rows, so no DISTINCT over every column (JSON included) of a page.
            teams = Membership.objects.filter(user=user).values("team_id")
            return qs.filter(Q(requester=user) | Q(team__in=teams) | Q(owner_team__in=teams))
        return qs.none()


class ChangeRequestManager(models.Manager.from_queryset(ChangeRequestQuerySet)):  # type: ignore[misc]
    """Rows without `search_vector`: only the search's WHERE reads it (through its index), so no
    list, page or detail fetches and decodes every request's tsvector."""

    def get_queryset(self) -> ChangeRequestQuerySet:
        return super().get_queryset().defer("search_vector")


# What the top bar's search matches (portal/selectors/search.py): these payload keys, lower-cased.
SEARCHED_PAYLOAD_KEYS = ("name", "role", "schema", "owner_role", "member_of")
SEARCH_TEXT = Lower(Concat(*[part for key in SEARCHED_PAYLOAD_KEYS
                             for part in (KeyTextTransform(key, "payload"), Value("\n", output_field=TextField()))]))


class ChangeRequest(models.Model):
    type = models.CharField(max_length=10, choices=RequestType.choices)
    instance = models.ForeignKey("portal.Instance", on_delete=models.PROTECT, related_name="requests")
    team = models.ForeignKey("portal.Team", on_delete=models.PROTECT, related_name="requests")
    # The team owning the schema a grant / revoke touches, when the portal manages it.
    owner_team = models.ForeignKey(
        "portal.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="incoming_requests"
    )
    # Null for system requests (grant expiry, drift revokes filed by the portal itself).
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="change_requests"
    )
    # Who filed a system request by hand (a reviewer's drift revoke): still a system request, but
    # that person asked for the change, so they may not approve it themselves.
    filed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="filed_requests"
    )
    justification = models.TextField()
    payload = models.JSONField(default=dict)
    # The ordered SQL statements exactly as the reviewer reads them; `plan_hash` is their SHA-256.
    plan = models.JSONField(default=list)
    plan_hash = models.CharField(max_length=64)
    risk = models.CharField(max_length=6, choices=Risk.choices, default=Risk.LOW)
    risk_reasons = models.JSONField(default=list)
    # Review-rule findings (DDL) and the dry-run result, shown to the reviewer.
    findings = models.JSONField(default=list, blank=True)
    dry_run = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=RequestStatus.choices, default=RequestStatus.SUBMITTED)
    status_detail = models.TextField(blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    submitted_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    # Applied without prior approval for an incident (portal/services/breakglass.py); the details
    # and the post-hoc review are its BreakGlass row. On the row itself so lists show the badge
    # without a join.
    break_glass = models.BooleanField(default=False)
    # "Edit and resubmit" (#19): the failed or rejected request this one was filed again from.
    resubmit_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="resubmissions")
    # The words the search matches (SEARCH_TEXT), kept by PostgreSQL under a GIN index: a search
    # reads the index instead of every request's payload (bench/scale.py, #23).
    search_vector = models.GeneratedField(
        expression=Func(Value("simple"), SEARCH_TEXT, function="to_tsvector", output_field=SearchVectorField()),
        output_field=SearchVectorField(), db_persist=True)

    objects = ChangeRequestManager()
    restrict_policy = ChangeRequestQuerySet._team_policy

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "-id"], name="request_status_idx"),
            models.Index(fields=["team", "-id"], name="request_team_idx"),
            GinIndex(fields=["search_vector"], name="request_search_idx"),
            # The dashboard's counts per day and status, and its days' times to apply (#23).
            models.Index(fields=["created_at", "status"], name="request_created_idx"),
            models.Index(fields=["applied_at"], name="request_applied_idx"),
            # The review queue (and the dashboard's queue) in its order, submitted requests only:
            # the page walks it and stops after 20 rows that pass the decision rules, instead of
            # sorting every pending request the reviewer may decide on (#23).
            models.Index(risk_rank().desc(), F("created_at"), F("id"), name="request_pending_idx",
                         condition=Q(status=RequestStatus.SUBMITTED)),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type} on {self.instance_id}"

    @property
    def author_ids(self) -> set[int]:
        """The people who asked for this change: no-self-approval applies to each of them."""
        return {pk for pk in (self.requester_id, self.filed_by_id) if pk is not None}


# The width of RequestCount's time slots. Every time zone in use today is offset from UTC by a
# multiple of 15 minutes (India +5:30, Nepal +5:45, Chatham +12:45), so each slot lies within one
# local day of every zone and sums of slots give exact per-day totals in any of them.
COUNT_SLOT = "15 minutes"
COUNT_SLOT_SECONDS = 15 * 60


class RequestCount(models.Model):
    """How many requests were filed in a 15-minute slot (UTC) and are now in `status`.

    Kept by PostgreSQL triggers on portal_changerequest (migration 0022), in the same
    transaction as the insert, status change or delete: no write path can miss it (bulk_create and
    queryset updates included). The triggers append RequestCountDelta rows, which
    fold_request_counts() adds here as upserts `n = n + excluded.n` (no change is lost); readers sum
    both. The dashboard sums at most 14 days x 96 slots x 8 statuses rows (and the deltas not yet
    folded) instead of counting every request of its window (#23)."""

    pk = models.CompositePrimaryKey("slot", "status")
    slot = models.DateTimeField()
    status = models.CharField(max_length=10, choices=RequestStatus.choices)
    n = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.slot:%Y-%m-%d %H:%M} {self.status}: {self.n}"


class RequestCountDelta(models.Model):
    """Changes to RequestCount and TeamRequestCount not yet added to them: the triggers append one
    row per (slot, status, team) a statement changes, so writers share no row and wait for no one
    (upserting the counters themselves held a slot's row from a writer's statement to its commit,
    and two writers changing two statuses of one slot in opposite orders deadlocked). Readers sum
    the counters and these; fold_request_counts() moves them into the counters."""

    slot = models.DateTimeField()
    status = models.CharField(max_length=10, choices=RequestStatus.choices)
    team_id = models.BigIntegerField()  # no foreign key: a team's deltas may outlive it until folded
    n = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.slot:%Y-%m-%d %H:%M} {self.status} team {self.team_id}: {self.n:+d}"


class RequestMedianDay(models.Model):
    """The dashboard's median time to apply of a closed day in a time zone (and how many requests
    were applied that day), computed once by the dashboard (portal/selectors/dashboard.py) and
    dropped by triggers when a request applied around that day changes (migration 0022): a median
    does not add up from parts as RequestCount's counts do."""

    pk = models.CompositePrimaryKey("zone", "day")
    zone = models.CharField(max_length=64)
    day = models.DateField()
    # The day's bounds in UTC: the triggers drop exactly the kept days an applied_at falls in.
    starts = models.DateTimeField()
    ends = models.DateTimeField()
    applied = models.IntegerField()
    median = models.FloatField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.day} ({self.zone}): {self.median} over {self.applied}"


class TeamRequestCount(models.Model):
    """How many requests a team has filed, ever (the admin's home and team list): kept by the same
    triggers as RequestCount, where counting them read every request of the team on every page."""

    team = models.OneToOneField("portal.Team", on_delete=models.CASCADE, primary_key=True, related_name="+")
    n = models.BigIntegerField()

    def __str__(self) -> str:
        return f"team {self.team_id}: {self.n}"


class Execution(models.Model):
    """One attempt to apply a request's plan."""

    request = models.ForeignKey(ChangeRequest, on_delete=models.CASCADE, related_name="executions")
    attempt = models.PositiveIntegerField(default=1)
    worker = models.CharField(max_length=200, blank=True)
    plan_hash = models.CharField(max_length=64)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # [{"sql": text (secrets redacted), "ms": duration, "error": message or ""}]
    statements = models.JSONField(default=list)
    outcome = models.CharField(max_length=20, blank=True)  # applied | failed | retrying | already_applied
    error = models.TextField(blank=True)
    sqlstate = models.CharField(max_length=5, blank=True)

    class Meta:
        ordering = ["request", "attempt"]

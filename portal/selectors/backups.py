"""Backup reads (issue #20): an instance's policy, catalog and drill history; alerts for /healthz.

Who reads: platform admins, reviewers and auditors (`sees_everything`): backups hold every
team's data and their catalog names files and timings across teams; developers get a 403.
"""

from __future__ import annotations

from typing import Any

from portal.errors import PolicyViolation
from portal.models import Backup, BackupPolicy, Instance, RestoreDrill
from portal.models.backup import BackupHealth
from portal.personas import sees_everything

DRILL_CHART_POINTS = 50


def check_may_read_backups(user: Any) -> None:
    if not sees_everything(user):
        raise PolicyViolation("only platform admins, reviewers and auditors see backups")


def backup_list(user: Any, instance: Instance):
    check_may_read_backups(user)
    return Backup.objects.restrict(user, "view").filter(instance=instance).defer("verify_output", "row_counts")


def drill_list(user: Any, instance: Instance):
    check_may_read_backups(user)
    return RestoreDrill.objects.restrict(user, "view").filter(instance=instance).select_related("requested_by")


def drill_series(instance: Instance) -> dict[str, list]:
    """The last drills, oldest first, for the RTO / RPO chart."""
    drills = list(RestoreDrill.objects.filter(instance=instance).exclude(state="running")
                  .order_by("-started_at")[:DRILL_CHART_POINTS]
                  .values_list("started_at", "rto_seconds", "rpo_seconds", "state"))[::-1]
    return {"t": [d[0].isoformat() for d in drills], "rto": [d[1] for d in drills], "rpo": [d[2] for d in drills],
            "state": [d[3] for d in drills]}


def backup_alerts() -> list[dict[str, str]]:
    """Instances whose backups are failed or late (named by /healthz and the pages)."""
    return [{"instance": name, "health": health} for name, health in
            BackupPolicy.objects.filter(health__in=[BackupHealth.FAILED, BackupHealth.LATE])
            .exclude(instance__status="retired").order_by("instance__name")
            .values_list("instance__name", "health")]

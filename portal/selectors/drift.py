"""Drift findings as the UI lists them (reviewers, auditors and admins see them; others none)."""

from __future__ import annotations

from typing import Any

from portal.choices import DriftStatus
from provisioning.models import DriftFinding


def drift_list_for(user: Any, *, status: str | None = DriftStatus.OPEN, instance: Any = None):
    findings = DriftFinding.objects.restrict(user, "view").select_related("instance", "acknowledged_by")
    if status:
        findings = findings.filter(status=status)
    if instance is not None:
        findings = findings.filter(instance=instance)
    return findings.order_by("-detected_at")


def needs_attention_count(user: Any, instances: list | None = None) -> int:
    """The one "needs attention" number (#19): Drift's open findings the user sees, on `instances`
    (a replica counts as its primary: it mirrors its catalog, and Drift scans primaries only). The
    Drift page and the entitlements page show this same count (one query)."""
    findings = DriftFinding.objects.restrict(user, "view").filter(status=DriftStatus.OPEN)
    if instances is not None:
        findings = findings.filter(instance_id__in={i.replica_of_id or i.pk for i in instances})
    return findings.count()

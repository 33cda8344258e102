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

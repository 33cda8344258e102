"""Replica writes: promote, decommission (platform admins), and the health job's state and lag."""

from __future__ import annotations

from typing import Any

import structlog
from django.db import transaction
from django.utils import timezone

from audit.services import record
from portal.choices import InstanceStatus
from portal.errors import Conflict, PolicyViolation
from portal.logging import redact_text
from portal.models import Instance
from portal.personas import is_admin
from provisioning.replicas.base import ReplicaState, driver_for

log = structlog.get_logger(__name__)

# Replicas the health job leaves alone: being built by a worker, or gone.
NOT_WATCHED = (InstanceStatus.PROVISIONING, InstanceStatus.RETIRED)


def _check_replica_action(*, instance: Instance, actor: Any, verb: str) -> None:
    if not is_admin(actor):
        raise PolicyViolation(f"only platform admins may {verb} a replica")
    if instance.replica_of_id is None:
        raise Conflict(f"{instance.name} is not a replica")
    if instance.status == InstanceStatus.RETIRED:
        raise Conflict(f"{instance.name} is retired")
    if instance.status == InstanceStatus.PROVISIONING:
        raise Conflict(f"{instance.name} is still being built")


def _cluster_action(*, instance: Instance, actor: Any, actor_ip: str | None, verb: str, run: Any) -> None:
    """Run the driver's action; a failure is audited and answered as a 409 naming the reason."""
    try:
        run(instance)
    except Exception as exc:  # pg_ctl, a connection or a timeout: the cluster did not allow it
        reason = redact_text(str(exc))[:400] or type(exc).__name__
        record(f"replica.{verb}_failed", actor=actor, actor_ip=actor_ip, object_type="instance",
               object_id=instance.pk, instance=instance, outcome="failed", details={"error": reason})
        raise Conflict(f"could not {verb} {instance.name}: {reason}") from exc


def replica_promote(*, instance: Instance, actor: Any, actor_ip: str | None = None) -> Instance:
    """pg_ctl promote the standby: it becomes a writable primary and `replica_of` is cleared."""
    _check_replica_action(instance=instance, actor=actor, verb="promote")
    primary_name = instance.replica_of.name
    driver = driver_for(instance)
    # The cluster action runs outside the portal transaction: it is idempotent, so an
    # interrupted promote is finished by pressing the button again.
    _cluster_action(instance=instance, actor=actor, actor_ip=actor_ip, verb="promote", run=driver.promote)
    with transaction.atomic():
        instance = Instance.objects.select_for_update().get(pk=instance.pk)
        instance.replica_of = None
        instance.status = InstanceStatus.REACHABLE
        instance.status_detail = f"promoted; formerly a replica of {primary_name}"
        instance.replica_lag_bytes = None
        instance.replica_lag_seconds = None
        instance.checked_at = timezone.now()
        instance.save(update_fields=["replica_of", "status", "status_detail", "replica_lag_bytes",
                                     "replica_lag_seconds", "checked_at"])
        record("replica.promoted", actor=actor, actor_ip=actor_ip, object_type="instance", object_id=instance.pk,
               instance=instance, outcome="promoted",
               details={"former_primary": primary_name, "environment": instance.environment})
    return instance


def replica_decommission(*, instance: Instance, actor: Any, actor_ip: str | None = None) -> Instance:
    """Stop the standby, remove its data directory and mark it retired (the row stays for history)."""
    _check_replica_action(instance=instance, actor=actor, verb="decommission")
    driver = driver_for(instance)
    _cluster_action(instance=instance, actor=actor, actor_ip=actor_ip, verb="decommission", run=driver.destroy)
    with transaction.atomic():
        instance = Instance.objects.select_for_update().get(pk=instance.pk)
        instance.status = InstanceStatus.RETIRED
        instance.status_detail = "decommissioned: stopped and data removed"
        instance.replica_lag_bytes = None
        instance.replica_lag_seconds = None
        instance.checked_at = timezone.now()
        instance.save(update_fields=["status", "status_detail", "replica_lag_bytes", "replica_lag_seconds",
                                     "checked_at"])
        record("replica.decommissioned", actor=actor, actor_ip=actor_ip, object_type="instance",
               object_id=instance.pk, instance=instance, outcome="retired",
               details={"primary": instance.replica_of.name, "environment": instance.environment,
                        "data_dir": instance.data_dir})
    return instance


def replica_refresh(replica: Instance) -> Instance:
    """Record a replica's state and lag (an audit event when its status changes)."""
    try:
        state = driver_for(replica).status(replica)
    except Exception as exc:  # noqa: BLE001 - a probe that breaks means the replica is not healthy
        state = ReplicaState(InstanceStatus.UNHEALTHY, redact_text(str(exc))[:400])
    previous = replica.status
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": state.status, "status_detail": state.detail[:500], "replica_lag_bytes": state.lag_bytes,
        "replica_lag_seconds": state.lag_seconds, "checked_at": now,
    }
    if state.server_version:
        fields["server_version"] = state.server_version
    with transaction.atomic():
        # Conditional: a promote or decommission that landed meanwhile wins over this probe.
        updated = (Instance.objects.filter(pk=replica.pk, replica_of__isnull=False)
                   .exclude(status__in=NOT_WATCHED).update(**fields))
        if updated and previous != state.status:
            record("instance.status_changed", object_type="instance", object_id=replica.pk, instance=replica,
                   outcome=state.status, details={"from": previous, "to": state.status, "detail": state.detail,
                                                  "replica_of": replica.replica_of.name})
    if updated:
        for key, value in fields.items():
            setattr(replica, key, value)
    return replica


def _watched():
    return (Instance.objects.filter(replica_of__isnull=False).exclude(status__in=NOT_WATCHED)
            .select_related("replica_of").order_by("pk"))


def replicas_watched_ids() -> list[int]:
    """The replicas the health job watches (the beat job fans out one task each)."""
    return list(_watched().values_list("pk", flat=True))


def replica_watched(replica_id: int) -> Instance | None:
    return _watched().filter(pk=replica_id).first()


def replicas_refresh() -> int:
    """Every watched replica's state and lag, one after another; returns how many were probed."""
    replicas = _watched()
    count = 0
    for replica in replicas:
        replica_refresh(replica)
        count += 1
    return count

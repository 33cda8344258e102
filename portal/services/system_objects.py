"""Deletion of a system-level object is audited however it happens (PCI DSS v4 10.2.1.7).

The portal's pages and API have no delete for instances, teams, policies, review rules,
executor logins, personas or accounts; they go through a management shell, a data migration or
a future screen. Whichever, a `post_delete` receiver records `<kind>.deleted` in the deleting
transaction (Django wraps a delete and its cascade in one), with the object's identifying
fields; the actor is the signed-in user when a web or API request deletes, else `system`.
Creation keeps its own events in the services that create (instance.created, team.created...).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models.signals import post_delete

from audit.services import record
from portal.models import ApprovalPolicy, DdlRuleSetting, Instance, Team
from provisioning.models import ExecutorLogin

# The request being served on this thread or task, set by portal.middleware.RequestContextMiddleware.
current_request: ContextVar[Any] = ContextVar("current_request", default=None)


def _kinds() -> dict[type, tuple[str, tuple[str, ...]]]:
    """Model -> (event kind, fields kept in the event's details)."""
    return {
        Instance: ("instance", ("name", "kind", "environment", "host", "port")),
        Team: ("team", ("name",)),
        ApprovalPolicy: ("policy", ("environment", "request_type", "risk", "approvals_required")),
        DdlRuleSetting: ("ddl_rule", ("environment", "rule_id", "enabled")),
        ExecutorLogin: ("executor_login", ("role", "instance_id", "team_id")),
        Group: ("persona", ("name",)),
        get_user_model(): ("user", ("username", "is_active", "is_superuser")),
    }


def _actor() -> tuple[Any, str | None]:
    request = current_request.get()
    if request is None:
        return None, None
    from portal.services.auth import client_ip

    user = getattr(request, "user", None)
    return (user if getattr(user, "is_authenticated", False) else None), client_ip(request)


def _deleted(sender: type, instance: Any, **_: Any) -> None:
    kind, fields = _kinds()[sender]
    details = {field: getattr(instance, field) for field in fields if hasattr(instance, field)}
    details = {key: (value if isinstance(value, bool | int | str) or value is None else str(value))
               for key, value in details.items()}
    actor, actor_ip = _actor()
    record(f"{kind}.deleted", actor=actor, actor_ip=actor_ip, object_type=kind, object_id=instance.pk,
           instance=details.get("name", "") if kind == "instance" else "", outcome="ok", details=details)


def connect() -> None:
    """Connect the receivers (PortalConfig.ready); idempotent through dispatch_uid."""
    for model in _kinds():
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"audit-deleted-{model._meta.label}")

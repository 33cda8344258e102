"""Instances: list, detail, registration by platform admins."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.errors import DomainError
from portal.forms.instances import InstanceRegisterForm
from portal.personas import is_admin, is_auditor, is_reviewer
from portal.selectors.drift import drift_list_for
from portal.selectors.instances import instance_get_for, instance_list_for, instance_recent_requests
from portal.selectors.monitoring import lag_sparklines
from portal.services.auth import client_ip
from portal.services.instances import instance_register
from portal.services.replicas import replica_decommission, replica_promote


@login_required
@require_GET
def instance_list(request):
    return render(request, "instances/list.html", {"instances": instance_list_for(request.user),
                                                   "can_register": is_admin(request.user)})


@login_required
@require_GET
def instance_detail(request, pk: int):
    instance = instance_get_for(request.user, pk)
    replicas = list(instance.replicas.order_by("name"))
    # each replica's lag over the last 24 hours, from its monitoring samples (#21)
    lines = lag_sparklines(replicas)
    for replica in replicas:
        replica.lag_line = lines.get(replica.pk)
    return render(request, "instances/detail.html", {
        "instance": instance,
        "replicas": replicas,
        "recent_requests": instance_recent_requests(request.user, instance),
        # Auditors see the findings read-only; only reviewers scan and act.
        "drift": list(drift_list_for(request.user, instance=instance)[:50])
        if is_reviewer(request.user) or is_auditor(request.user) else None,
        "can_act_on_drift": is_reviewer(request.user),
        "can_manage_replica": is_admin(request.user) and instance.is_replica
        and instance.status not in ("retired", "provisioning"),
    })


def _replica_action(request, pk: int, service, done: str):
    instance = instance_get_for(request.user, pk)
    if not is_admin(request.user):
        raise PermissionDenied
    try:
        instance = service(instance=instance, actor=request.user, actor_ip=client_ip(request))
    except DomainError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, done.format(name=instance.name))
    return redirect("instance-detail", pk=instance.pk)


@login_required
@require_POST
def instance_promote_view(request, pk: int):
    return _replica_action(request, pk, replica_promote, "{name} was promoted: it is now a writable primary.")


@login_required
@require_POST
def instance_decommission_view(request, pk: int):
    return _replica_action(request, pk, replica_decommission,
                           "{name} was decommissioned: stopped, data removed, retired.")


@login_required
@require_http_methods(["GET", "POST"])
def instance_register_view(request):
    if not is_admin(request.user):
        raise PermissionDenied
    form = InstanceRegisterForm(request.POST or None)
    failure: DomainError | None = None
    if request.method == "POST" and form.is_valid():
        try:
            instance = instance_register(actor=request.user, actor_ip=client_ip(request), **form.cleaned_data)
        except DomainError as exc:
            form.add_domain_error(exc)
            failure = exc
        else:
            messages.success(request, f"Instance {instance.name} registered ({instance.server_version}).")
            return redirect("instance-detail", pk=instance.pk)
    return render(request, "instances/register.html", {"form": form, "failure": failure,
                                                       "hint": _registration_hint(failure)},
                  status=400 if form.errors else 200)


def _registration_hint(failure: DomainError | None) -> str:
    """What to check next, for the usual reasons a first connection fails."""
    if failure is None:
        return ""
    text = (failure.detail + " " + " ".join(m for ms in failure.errors.values() for m in ms)).lower()
    if "password authentication failed" in text:
        return "The server answered but refused the user name or password. Check both; nothing was stored."
    if "refused" in text:
        return ("Nothing listens on that host and port. Is PostgreSQL running, and is the port right "
                "(listen_addresses / port in postgresql.conf)?")
    if "timeout" in text or "timed out" in text:
        return "No answer within 5 seconds: a firewall, a wrong host or an overloaded server."
    if "pg_hba" in text or "no pg_hba.conf entry" in text:
        return "The server does not accept this user from the portal's address: add a pg_hba.conf line for it."
    if "portal_allowed_targets" in text:
        return "The portal only connects to hosts an operator allowed (PORTAL_ALLOWED_TARGETS); nothing was tried."
    if "createrole" in text or "superuser" in text:
        return "The user connected but cannot create roles: use a superuser or a role with CREATEROLE."
    if "does not exist" in text:
        return "The server answered, but the maintenance database or the user does not exist."
    return ""

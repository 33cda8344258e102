"""Instances: list, detail, registration by platform admins."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render

from portal.errors import DomainError
from portal.forms.instances import InstanceRegisterForm
from portal.querysets import is_admin
from portal.selectors.instances import instance_get_for, instance_list_for, instance_recent_requests
from portal.services.auth import client_ip
from portal.services.instances import instance_register


@login_required
def instance_list(request):
    return render(request, "instances/list.html", {"instances": instance_list_for(request.user),
                                                   "can_register": is_admin(request.user)})


@login_required
def instance_detail(request, pk: int):
    instance = instance_get_for(request.user, pk)
    return render(request, "instances/detail.html", {
        "instance": instance,
        "replicas": instance.replicas.all(),
        "recent_requests": instance_recent_requests(request.user, instance),
    })


@login_required
def instance_register_view(request):
    if not is_admin(request.user):
        raise PermissionDenied
    form = InstanceRegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            instance = instance_register(actor=request.user, actor_ip=client_ip(request), **form.cleaned_data)
        except DomainError as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, f"Instance {instance.name} registered ({instance.server_version}).")
            return redirect("instance-detail", pk=instance.pk)
    return render(request, "instances/register.html", {"form": form}, status=400 if form.errors else 200)

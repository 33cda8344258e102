"""Access review pages (issue #18): campaigns, a certifier's queue, bulk decisions, the report.

Not the review queue of request approvals (portal/views/reviews.py). Who may do what is the
services' and selectors' (portal/services/access_reviews.py, access_review_decisions.py): these views only add the page
rules — the campaign list and a campaign's page for anyone with a campaign in scope (a 404
otherwise), the opening form for reviewers and admins (403 otherwise).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.choices import CertificationDecision
from portal.errors import DomainError, PolicyViolation
from portal.forms.access_reviews import CampaignOpenForm
from portal.models import AccessReviewItem
from portal.personas import is_admin, is_auditor, is_reviewer
from portal.selectors.access_reviews import (
    ITEM_FILTERS,
    PENDING,
    campaign_get_for,
    campaign_list_for,
    campaign_progress,
    items_for,
    may_decide,
    with_live_evidence,
)
from portal.services.access_review_decisions import item_reassign, items_decide
from portal.services.access_reviews import campaign_open, campaign_report_export
from portal.services.auth import client_ip

PAGE_SIZE = 100


@login_required
@require_GET
def campaign_list(request):
    page = Paginator(campaign_list_for(request.user), 50).get_page(request.GET.get("page"))
    return render(request, "access_reviews/list.html", {"page": page, "can_open": is_reviewer(request.user)})


@login_required
@require_http_methods(["GET", "POST"])
def campaign_new(request):
    if not is_reviewer(request.user):
        raise PermissionDenied
    form = CampaignOpenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        values = form.cleaned_data
        try:
            campaign = campaign_open(
                user=request.user, name=values["name"],
                scope={"instances": values["instances"], "environments": values["environments"],
                       "teams": values["teams"]},
                deadline=values["deadline"], unanswered_action=values["unanswered_action"],
                fallback_certifier=values["fallback_certifier"], actor_ip=client_ip(request))
        except DomainError as exc:
            form.add_domain_error(exc)
        else:
            messages.success(request, f"Campaign #{campaign.pk} opened: {campaign.items.count()} item(s) to certify.")
            return redirect("access-review-detail", pk=campaign.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "access_reviews/new.html", {"form": form}, status=status)


def _campaign_or_404(request, pk: int):
    campaign = campaign_get_for(request.user, pk)
    if campaign is None:
        raise Http404("no such campaign")
    return campaign


@login_required
@require_GET
def campaign_detail(request, pk: int):
    campaign = _campaign_or_404(request, pk)
    filters = {name: request.GET.get(name, "")[:63] for name in ITEM_FILTERS}
    if filters["decision"] not in ("", PENDING, *CertificationDecision.values):
        filters["decision"] = ""
    page = Paginator(items_for(request.user, campaign, filters), PAGE_SIZE).get_page(request.GET.get("page"))
    views = with_live_evidence(list(page.object_list))
    for view in views:
        view.can_decide = may_decide(request.user, view.item, campaign)
    admin = is_admin(request.user)
    return render(request, "access_reviews/detail.html", {
        "campaign": campaign, "progress": campaign_progress(campaign), "page": page, "items": views,
        "filters": filters, "decisions": CertificationDecision.choices, "pending": PENDING,
        "any_decidable": any(v.can_decide for v in views),
        "can_report": is_reviewer(request.user) or is_auditor(request.user), "can_reassign": admin,
        "users": list(User.objects.filter(is_active=True).order_by("username").values_list("username", flat=True))
        if admin else [],
    })


def _back(request, pk: int):
    target = request.POST.get("next", "")
    if target.startswith(f"/access-reviews/{pk}/") and not target.startswith("//"):
        return redirect(target)
    return redirect("access-review-detail", pk=pk)


@login_required
@require_POST
def campaign_decide(request, pk: int):
    """A decision over the ticked items (one or many) with one comment."""
    campaign = _campaign_or_404(request, pk)
    ids = [int(v) for v in request.POST.getlist("items") if v.isdigit() and len(v) < 19]
    expires_at = None
    if request.POST.get("expires_at"):
        expires_at = parse_datetime(request.POST["expires_at"])
        if expires_at is not None and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=campaign.deadline.tzinfo)  # entered in UTC
    decision = request.POST.get("decision", "")
    try:
        decided = items_decide(campaign=campaign, user=request.user, item_ids=ids, decision=decision,
                               comment=request.POST.get("comment", ""),
                               expires_at=expires_at if expires_at is not None else request.POST.get("expires_at"),
                               actor_ip=client_ip(request))
    except PolicyViolation as exc:
        raise PermissionDenied(exc.detail) from exc
    except DomainError as exc:
        messages.error(request, f"Nothing was decided: {exc.detail}")
    else:
        label = dict(CertificationDecision.choices)[decision]
        messages.success(request, f"{len(decided)} item(s): {label}."
                         + (" Revoke requests are queued." if decision == CertificationDecision.REVOKE else ""))
    return _back(request, pk)


@login_required
@require_POST
def campaign_reassign(request, pk: int):
    campaign = _campaign_or_404(request, pk)
    item_id = request.POST.get("item", "")
    item = AccessReviewItem.objects.restrict(request.user, "view").filter(
        campaign=campaign, pk=int(item_id) if item_id.isdigit() and len(item_id) < 19 else 0).first()
    if item is None:
        raise Http404("no such item")
    certifier = User.objects.filter(username=request.POST.get("certifier", "")[:150], is_active=True).first()
    try:
        item_reassign(item=item, user=request.user, certifier=certifier, comment=request.POST.get("comment", ""),
                      actor_ip=client_ip(request))
    except PolicyViolation as exc:
        raise PermissionDenied(exc.detail) from exc
    except DomainError as exc:
        messages.error(request, f"Item #{item.pk} was not reassigned: {exc.detail}")
    else:
        messages.success(request, f"Item #{item.pk} is now {certifier.username}'s to certify.")
    return _back(request, pk)


@login_required
@require_GET
def campaign_report(request, pk: int, fmt: str):
    campaign = _campaign_or_404(request, pk)
    try:
        content, content_type, filename = campaign_report_export(campaign=campaign, user=request.user, format=fmt,
                                                                 actor_ip=client_ip(request))
    except DomainError as exc:
        if exc.status_code == 403:
            raise PermissionDenied(exc.detail) from exc
        raise Http404(exc.detail) from exc
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response

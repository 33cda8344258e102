"""The left navigation by persona and the portal's environment badge."""

from __future__ import annotations

from django.conf import settings
from django.urls import NoReverseMatch, reverse

from portal.choices import Persona
from portal.personas import is_admin, user_groups
from portal.selectors.requests import pending_count_label, pending_review_count

# (label, url name, icon); a url name that is not installed yet is skipped.
NAV = {
    Persona.REQUESTERS.value: [
        ("Home", "home", "house"),
        ("New request", "request-new", "plus-circle"),
        ("Break-glass", "break-glass-new", "exclamation-octagon"),  # emergency access, reviewed after
        ("My requests", "request-list", "list-task"),
        ("My access", "my-access", "key"),
        ("Access reviews", "access-review-list", "clipboard-check"),  # team leads certify
        ("Instances", "instance-list", "database"),
    ],
    Persona.REVIEWERS.value: [
        ("Review queue", "review-queue", "check2-square"),
        ("All requests", "request-list", "list-task"),
        ("Drift", "drift-list", "exclamation-triangle"),
        ("Access reviews", "access-review-list", "clipboard-check"),
        ("Instances", "instance-list", "database"),
    ],
    Persona.AUDITORS.value: [
        ("Audit log", "audit-log", "journal-text"),
        ("Exports", "audit-exports", "download"),
        ("Entitlements", "entitlements", "people"),
        ("Verify", "audit-verify-page", "shield-check"),
        ("Drift", "drift-list", "exclamation-triangle"),  # read-only: grants made outside the portal
        ("Access reviews", "access-review-list", "clipboard-check"),  # reports
    ],
    Persona.ADMINS.value: [
        ("Instances", "instance-list", "database"),
        ("Teams", "team-list", "people"),
        ("Sign-in groups", "group-mapping-list", "diagram-3"),
        ("Users", "user-list", "person-x"),  # tokens and offboarding
        ("Policies", "policy-list", "sliders"),
        ("Review rules", "review-rules", "rulers"),
        ("Break-glass", "break-glass-settings", "exclamation-octagon"),  # on / off per environment
        ("SIEM forwarding", "audit-siem", "broadcast"),
        ("Review queue", "review-queue", "check2-square"),
        ("All requests", "request-list", "list-task"),
        ("Drift", "drift-list", "exclamation-triangle"),
        ("Access reviews", "access-review-list", "clipboard-check"),
    ],
}


def persona_of(user) -> str:
    if is_admin(user):
        return Persona.ADMINS.value
    groups = user_groups(user)
    for persona in (Persona.REVIEWERS.value, Persona.AUDITORS.value, Persona.REQUESTERS.value):
        if persona in groups:
            return persona
    return Persona.REQUESTERS.value


def navigation(request) -> dict:
    user = getattr(request, "user", None)
    context = {"portal_environment": settings.PORTAL_ENVIRONMENT}
    if not user or not user.is_authenticated:
        return context
    if getattr(request, "htmx", False):
        # htmx partials (the status poll every 1.5 s, the live preview) carry no frame: skip the
        # navigation and the review count, which are the costly part.
        return context
    persona = persona_of(user)
    items = []
    seen = set()
    nav = NAV[persona]
    if all(url_name != "home" for _, url_name, _ in nav):
        nav = [("Home", "home", "house"), *nav]  # every persona has a way back to its dashboard (#19)
    for label, url_name, icon in nav:
        if url_name in seen:
            continue
        try:
            url = reverse(url_name)
        except NoReverseMatch:
            continue
        seen.add(url_name)
        items.append({"label": label, "url": url, "url_name": url_name, "icon": icon, "active": False})
    # The active item is the longest nav URL that prefixes the path (/requests/new/ over /requests/).
    matches = [i for i in items if request.path == i["url"] or (i["url"] != "/" and request.path.startswith(i["url"]))]
    if matches:
        max(matches, key=lambda i: len(i["url"]))["active"] = True
    context.update(
        nav_items=items,
        persona=persona,
        persona_label=Persona(persona).label,
        user_teams=[m.team.name for m in user.memberships.select_related("team")],
        review_count=_review_count(request) if any(i["url_name"] == "review-queue" for i in items) else 0,
        search_query=request.GET.get("q", "") if request.resolver_match and
        request.resolver_match.url_name == "request-search" else "",
    )
    # "100+" past PENDING_COUNT_SHOWN: the count stops there (selectors.requests.pending_review_count).
    context["review_count_label"] = pending_count_label(context["review_count"])
    return context


def _review_count(request) -> int:
    """How many requests wait for this reviewer (the nav badge); the review queue has counted them
    already for its pages (views/reviews.py), so it is not counted twice."""
    counted = getattr(request, "pending_review_count", None)
    return counted if counted is not None else pending_review_count(request.user)

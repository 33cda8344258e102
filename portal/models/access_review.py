"""Access reviews (issue #18): a campaign recertifies the live privileges in a scope.

A campaign snapshots the entitlements of its scope when it opens (one AccessReviewItem per
privilege: a grant the portal made, or a privilege found on the cluster that it did not make)
and gives each item a certifier. The certifier keeps it, revokes it (a system revoke request
through the engine) or shortens it (an expiry on the grant). "Review" elsewhere in the portal
means approving a request; these are "access reviews".
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from portal.choices import CampaignStatus, CertificationDecision, UnansweredAction
from portal.querysets import RestrictedQuerySet


class AccessReviewCampaign(models.Model):
    name = models.CharField(max_length=200)
    # {"instances": [names], "environments": [dev|staging|prod], "teams": [names]}; every list
    # given narrows the scope (an empty list: no restriction on that axis).
    scope = models.JSONField(default=dict)
    deadline = models.DateTimeField()
    unanswered_action = models.CharField(max_length=10, choices=UnansweredAction.choices)
    # Certifies what no team owns (orphans) and what the team lead holds themself.
    fallback_certifier = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    opened_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=10, choices=CampaignStatus.choices, default=CampaignStatus.OPEN)
    # Instances in scope whose catalogs could not be read when the campaign opened.
    unreachable = models.JSONField(default=dict, blank=True)
    last_reminder_at = models.DateTimeField(null=True, blank=True)
    deadline_processed_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["-opened_at", "-id"]
        indexes = [models.Index(fields=["status", "deadline"], name="campaign_status_deadline_idx")]

    def __str__(self) -> str:
        return f"campaign #{self.pk} {self.name}"

    @staticmethod
    def restrict_policy(qs, user, action):
        # Reviewers, auditors and admins see every campaign (restrict()); a certifier sees the
        # campaigns holding an item assigned to them.
        if action == "view":
            return qs.filter(pk__in=AccessReviewItem.objects.filter(certifier=user).values("campaign_id"))
        return qs.none()


class AccessReviewItem(models.Model):
    campaign = models.ForeignKey(AccessReviewCampaign, on_delete=models.CASCADE, related_name="items")
    instance = models.ForeignKey("portal.Instance", on_delete=models.PROTECT, related_name="+")
    database = models.CharField(max_length=63)
    schema = models.CharField(max_length=63)
    role = models.CharField(max_length=63)
    kind = models.CharField(max_length=12)  # schema | tables | sequences | default | grant
    privileges = models.JSONField(default=list)
    tables = models.JSONField(default=list, blank=True)  # "all", a list of names, or ""
    # grant: the portal made it (the Grant row); outside: seen on the cluster, made outside the portal.
    source = models.CharField(max_length=10)
    grant = models.ForeignKey("portal.Grant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    owning_team = models.ForeignKey("portal.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Who holds the privilege by the records (the grant's requester, the role's creator): never its certifier.
    holders = models.JSONField(default=list, blank=True)
    certifier = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="certifications")
    certifier_reason = models.CharField(max_length=12, blank=True)  # team_lead | fallback | opener | escalated | reassigned
    # Frozen at the snapshot: request, requester, approvers and times, expiry, drift findings.
    evidence = models.JSONField(default=dict, blank=True)
    decision = models.CharField(max_length=8, choices=CertificationDecision.choices, blank=True)
    comment = models.TextField(blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    # Null with a decision: the portal decided (the deadline's revoke of an unanswered item).
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    new_expires_at = models.DateTimeField(null=True, blank=True)
    revoke_request = models.ForeignKey("portal.ChangeRequest", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+")
    escalated_at = models.DateTimeField(null=True, blank=True)
    escalated_from = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+")

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["campaign", "instance", "database", "schema", "role", "id"]
        indexes = [models.Index(fields=["certifier", "campaign"], name="review_item_certifier_idx",
                                condition=Q(decision=""))]

    def __str__(self) -> str:
        return f"{' '.join(self.privileges)} on {self.database}.{self.schema} to {self.role}"

    @staticmethod
    def restrict_policy(qs, user, action):
        if action == "view":
            return qs.filter(certifier=user)
        return qs.none()

    @property
    def decided(self) -> bool:
        return bool(self.decision)

    @property
    def decision_label(self) -> str:
        return CertificationDecision(self.decision).label if self.decision else "pending"

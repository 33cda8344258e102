"""Approval policies: per environment x request type x risk, how many approvals from whom."""

from django.db import models

from portal.choices import Environment, RequestType, Risk


class ApprovalPolicy(models.Model):
    environment = models.CharField(max_length=10, choices=Environment.choices)
    request_type = models.CharField(max_length=10, choices=RequestType.choices)
    risk = models.CharField(max_length=6, choices=Risk.choices)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    # Django group names whose members may approve (e.g. ["reviewers"]).
    approver_groups = models.JSONField(default=list)
    # Cross-team access also needs the lead of the team that owns the schema.
    require_owner_lead = models.BooleanField(default=False)
    # Only ever honoured for low-risk dev changes (enforced in portal.selectors.approvals).
    auto_approve = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "request_type", "risk"], name="policy_unique"),
            models.CheckConstraint(
                condition=~models.Q(auto_approve=True) | (models.Q(environment="dev") & models.Q(risk="low")),
                name="policy_auto_approve_only_low_dev",
            ),
        ]
        verbose_name_plural = "approval policies"

    def __str__(self) -> str:
        return f"{self.environment}/{self.request_type}/{self.risk}: {self.approvals_required}"


class DdlRuleSetting(models.Model):
    """Whether a DDL review rule (provisioning/ddl/rules.py RULES) applies in an environment.

    A missing row means the rule is on: switching a rule off is an explicit admin decision.
    """

    environment = models.CharField(max_length=10, choices=Environment.choices)
    rule_id = models.CharField(max_length=64)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["environment", "rule_id"], name="ddl_rule_setting_unique")]
        ordering = ["rule_id", "environment"]

    def __str__(self) -> str:
        return f"{self.environment}/{self.rule_id}: {'on' if self.enabled else 'off'}"

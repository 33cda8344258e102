"""Switching DDL review rules per environment (platform admins, audited); which are on: portal/selectors/ddl_rules.py."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit.services import record
from portal.choices import Environment
from portal.errors import InvalidPayload, PolicyViolation
from portal.models import DdlRuleSetting
from portal.personas import is_admin
from provisioning.ddl.rules import RULES


def rule_setting_set(*, actor: Any, environment: str, rule_id: str, enabled: bool,
                     actor_ip: str | None = None) -> DdlRuleSetting:
    """Switch one rule on or off in one environment (platform admins only); audited."""
    if not is_admin(actor):
        raise PolicyViolation("only platform admins change review rules")
    if environment not in Environment.values:
        raise InvalidPayload.field("environment", f"must be one of {', '.join(Environment.values)}")
    if rule_id not in RULES:
        raise InvalidPayload.field("rule_id", "unknown rule")
    with transaction.atomic():
        # A missing row means the rule is on (DdlRuleSetting): that is what the switch changes.
        setting, _ = DdlRuleSetting.objects.select_for_update().get_or_create(
            environment=environment, rule_id=rule_id, defaults={"enabled": True})
        before = setting.enabled
        setting.enabled = enabled
        setting.updated_by = actor.username
        setting.save()
        record("ddl_rule.changed", actor=actor, actor_ip=actor_ip, object_type="ddl_rule", object_id=rule_id,
               outcome="enabled" if enabled else "disabled",
               details={"environment": environment, "rule_id": rule_id, "before": before, "after": enabled})
    return setting

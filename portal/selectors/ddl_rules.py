"""DDL review rules as switched per environment: which are on (for a plan's context) and the
matrix the review rules page shows. Switching one is portal/services/ddl_rules.py."""

from __future__ import annotations

from typing import Any

from portal.choices import Environment
from portal.models import DdlRuleSetting
from provisioning.ddl.rules import RULES


def enabled_rules(environment: str) -> set[str]:
    """Rule ids that apply in `environment` (a rule without a setting row is on)."""
    off = set(DdlRuleSetting.objects.filter(environment=environment, enabled=False).values_list("rule_id", flat=True))
    return set(RULES) - off


def rule_matrix() -> list[dict[str, Any]]:
    """Every rule with its state per environment, for the review-rules page (one query)."""
    settings = {(s.environment, s.rule_id): s for s in DdlRuleSetting.objects.all()}
    rows = []
    for rule in RULES.values():
        states = []
        for environment in Environment:
            setting = settings.get((environment.value, rule.id))
            states.append({"environment": environment.value, "label": environment.label,
                           "enabled": setting.enabled if setting else True,
                           "updated_by": setting.updated_by if setting else ""})
        rows.append({"rule": rule, "states": states})
    return rows

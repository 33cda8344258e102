"""Every audit event says how it ended: no call site writes an empty outcome (#16, PCI DSS 10.2.2)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRITERS = {"record", "event", "audit_event", "_audit"}


def _calls_without_outcome(root: Path = ROOT) -> list[str]:
    missing = []
    for package in ("portal", "provisioning", "audit"):
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                action = node.args[0]
                if name not in WRITERS or not (isinstance(action, ast.Constant) and isinstance(action.value, str)
                                               and "." in action.value):
                    continue
                outcome = next((k.value for k in node.keywords if k.arg == "outcome"), None)
                if outcome is None or (isinstance(outcome, ast.Constant) and not outcome.value):
                    missing.append(f"{path.relative_to(root)}:{node.lineno} {action.value}")
    return missing


def test_every_audit_call_site_names_an_outcome():
    # given every place the code writes an audit event with a literal action
    # then each passes a non-empty outcome (team.*, policy.changed and instance.* did not)
    assert _calls_without_outcome() == []


def test_the_walk_finds_a_call_without_an_outcome(tmp_path):
    # the check itself: a call site without an outcome, or with an empty one, is reported
    (tmp_path / "portal").mkdir()
    (tmp_path / "portal" / "x.py").write_text('record("team.created", actor=None)\n'
                                              'record("team.deleted", outcome="")\n'
                                              'record("team.renamed", outcome="renamed")\n')
    assert _calls_without_outcome(tmp_path) == ["portal/x.py:1 team.created", "portal/x.py:2 team.deleted"]


def _branches(value: ast.expr) -> list[ast.expr]:
    """The values an expression may take: both sides of `a if c else b`, recursively."""
    if isinstance(value, ast.IfExp):
        return _branches(value.body) + _branches(value.orelse)
    return [value]


def _literal_outcomes(root: Path = ROOT) -> dict[str, str]:
    """Every string an `outcome=` keyword can be given literally (conditional expressions too)."""
    found: dict[str, str] = {}
    for package in ("portal", "provisioning", "audit"):
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                for keyword in node.keywords:
                    if keyword.arg != "outcome":
                        continue
                    for value in _branches(keyword.value):
                        if isinstance(value, ast.Constant) and isinstance(value.value, str):
                            found.setdefault(value.value, f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_every_outcome_is_in_the_vocabulary_and_classified():
    # given every outcome word the code writes, literally or as one of the enumerations it passes
    from audit.outcomes import FAILURE, SUCCESS, VOCABULARY
    from portal.choices import BreakGlassOutcome, Decision, DriftKind, InstanceStatus, RequestStatus
    from provisioning.engine.jobs import Outcome

    words = dict(_literal_outcomes())
    for enum in (RequestStatus, InstanceStatus, DriftKind, Decision, BreakGlassOutcome):
        words.update({value: enum.__name__ for value in enum.values})
    words.update({member.value: "Outcome" for member in Outcome})
    # then each is a word of the vocabulary, classified as a success or a failure (never both)
    assert {word: where for word, where in words.items() if word and word not in VOCABULARY} == {}
    assert not FAILURE & SUCCESS


def test_failures_read_as_failures():
    from audit.outcomes import is_failure, result_of

    assert [result_of(w) for w in ("ok", "applied", "rejected", "failed", "denied", "locked")] == [
        "success", "success", "success", "failure", "failure", "failure"]
    assert is_failure("a word nobody classified")  # never hidden as a success

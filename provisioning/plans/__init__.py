"""Plans: one module per request type turns a validated payload into ordered SQL steps.

Plans are pure: they read the payload and a PlanContext (provisioning/plans/context.py: the
instance's attributes, the portal's managed roles and schemas, the inventory, the requesting team
and the caller's persona) and do no I/O. Every plan module satisfies `PlanModule`:

    validate(payload, ctx) -> dict
        Check and normalise the payload (naming rule, allow-lists, unknown keys, inventory);
        raise portal.errors.InvalidPayload with errors keyed "payload.<field>". The returned
        dict is what is stored on the request and later rendered.
    render(payload, ctx=None, *, secrets=None) -> list[Step]
        The statements, built only with psycopg.sql (Identifier, Literal, allow-listed
        keywords), from the stored payload alone. With secrets=None, secret values are shown as
        placeholders: that is the text the reviewer reads and the hash binds to. The executor
        renders again with the secrets and checks that the secret-free rendering still hashes
        to plan_hash.
    database(payload) -> str | None
        The database the plan runs in (None: the instance's maintenance database).
    HOOKS: frozenset[str]
        The optional hooks the module provides (see OPTIONAL_HOOKS); callers ask hooks_of().

A plan is rendered to text once, at submit: `plan_text(steps)`; `plan_hash(text)` is the
SHA-256 the approvals bind to.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from psycopg import sql

if TYPE_CHECKING:
    from provisioning.plans.context import PlanContext

PLAN_MODULES = {
    "schema": "provisioning.plans.schema",
    "role": "provisioning.plans.role",
    "grant": "provisioning.plans.grant",
    "revoke": "provisioning.plans.revoke",
    "ddl": "provisioning.plans.ddl",
    "replica": "provisioning.plans.replica",
    "drop_role": "provisioning.plans.drop_role",
    "disable": "provisioning.plans.disable",
    "terminate": "provisioning.plans.terminate",
    "restore": "provisioning.plans.restore",
}

# Shown in the plan where the worker will put the SCRAM verifier of a generated password.
PASSWORD_PLACEHOLDER = sql.SQL("'<generated at apply time>'")


@dataclass(frozen=True)
class Step:
    """One statement of a plan."""

    statement: sql.Composable
    # False: runs alone, outside the plan's transaction (CREATE INDEX CONCURRENTLY, CREATE
    # DATABASE); such steps must be idempotent (IF NOT EXISTS / checked before running).
    transactional: bool = True
    # True: the rendered text may carry a secret; logs and audit keep the secret-free text.
    secret: bool = False
    # A query answering one boolean: the (non-transactional) step runs only when it is true.
    # DROP INDEX CONCURRENTLY cannot sit in a DO block or a function, so its condition lives here.
    only_if: sql.Composable | None = None
    # Builds or drops an index outside the transaction: bounded by PROVISIONING_INDEX_STATEMENT_TIMEOUT_MS,
    # not by the plan's statement_timeout (a big table's build takes longer than any plan).
    index_build: bool = False
    # SQL a requester wrote (a DDL request's statements): it runs over the team's executor login,
    # and when it fails only its SQLSTATE and position are kept, never the server's message, which
    # may quote values the statement computed (a data channel out of the cluster).
    user_sql: bool = False
    # Not None: the statement is a query answering one boolean that must be true, inside the plan's
    # transaction, for the rest of the plan to run ("the schema does not exist yet"). The executor
    # stops the plan with a permanent error naming this assumption when it is false: the cluster
    # changed since the reviewer read the plan. Plain words without names (the query names them),
    # so no name can ever end the comment it is shown in.
    asserts: str | None = None

    def __post_init__(self) -> None:
        if self.asserts is not None and (not self.transactional or "\n" in self.asserts or "\r" in self.asserts):
            raise ValueError("an assertion is one line and runs inside the plan's transaction")

    @property
    def text(self) -> str:
        text = self.statement.as_string(None)
        if self.only_if is not None:
            # The reviewer sees the condition too: what runs is the statement, when it holds.
            text += " -- only when: " + self.only_if.as_string(None)
        if self.asserts is not None:
            # The reviewer sees what the plan assumes; the query's result must be true.
            text += " -- must be true, else nothing is applied: " + self.asserts
        return text


def assertion(query: sql.Composable, asserts: str) -> Step:
    """A step that checks, inside the target transaction, something the plan depends on."""
    return Step(sql.SQL("SELECT {}").format(query), asserts=asserts)


def role_absent(role: str) -> Step:
    return assertion(sql.SQL("NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {})").format(
        sql.Literal(role)), "the role does not exist yet")


# PostgreSQL silently truncates longer names (NAMEDATALEN - 1): a plan must never name another object.
MAX_IDENTIFIER_BYTES = 63
# Where the grammar expects a role, even the quoted name "public" means PUBLIC (every role) and
# "none" is refused: quoting does not make them ordinary names.
SPECIAL_ROLE_NAMES = frozenset({"public", "none"})


def ident(*names: str, role: bool = False) -> sql.Identifier:
    """sql.Identifier that refuses what the server would not keep as written.

    Quoting alone is not enough: an empty name does not parse, a NUL cannot be sent, a name over
    63 bytes would be truncated by the server into a different name, and a role called "public"
    is everybody. Validation refuses all of these already; render checks again because it may be
    given a stored payload (found by the plan property tests).
    """
    for name in names:
        if not isinstance(name, str) or not name or "\x00" in name or len(name.encode()) > MAX_IDENTIFIER_BYTES:
            raise ValueError(f"not a usable identifier: {name!r}")
        if role and name in SPECIAL_ROLE_NAMES:
            raise ValueError(f"{name!r} is not an ordinary role name")
    return sql.Identifier(*names)


class PlanModule(Protocol):
    """What every plan module provides (see the module docstring above)."""

    HOOKS: frozenset[str]

    def validate(self, payload: Any, ctx: PlanContext) -> dict: ...

    def render(self, payload: dict, ctx: PlanContext | None = None, *,
               secrets: dict | None = None) -> list[Step]: ...

    def database(self, payload: dict) -> str | None: ...


# The optional hooks a plan module may declare in HOOKS, and the function each names:
#   review         review(payload, ctx, *, facts, facts_error=None) -> {findings, risk, risk_reasons}
#                  (pure; the service reads the facts named by facts_wanted(payload) first)
#   dry_run        dry_run_wanted(ctx) -> bool; the service then runs numbered_steps(payload) on the
#                  target and rolls back (provisioning/dry_run.py: I/O, never in the plan)
#   preconditions  preconditions(request) -> str | None: the one hook with I/O (the portal's records,
#                  read on the worker before each attempt); called by the engine
#   lookups        lookups(payload) -> context.Lookups: every name validate() may look up in the
#                  context (roles, schemas, inventory), so the portal reads only those (a submit
#                  costs the same on an instance of ten roles or ten thousand)
OPTIONAL_HOOKS: dict[str, tuple[str, ...]] = {
    "review": ("review", "facts_wanted"),
    "dry_run": ("dry_run_wanted", "numbered_steps"),
    "preconditions": ("preconditions",),
    "lookups": ("lookups",),
}


def module_for(request_type: str) -> PlanModule:
    try:
        return cast("PlanModule", importlib.import_module(PLAN_MODULES[request_type]))
    except KeyError:
        raise ValueError(f"unknown request type {request_type!r}") from None


def hooks_of(module: PlanModule) -> frozenset[str]:
    """The optional hooks `module` declares (a subset of OPTIONAL_HOOKS)."""
    return module.HOOKS


def hook(module: PlanModule, name: str) -> Callable[..., Any] | None:
    """The function of optional hook `name` when `module` declares it, else None."""
    if name not in OPTIONAL_HOOKS:
        raise ValueError(f"unknown plan hook {name!r}")
    return getattr(module, OPTIONAL_HOOKS[name][0]) if name in module.HOOKS else None


def plan_text(steps: list[Step]) -> list[str]:
    return [step.text for step in steps]


def plan_hash(plan: list[str]) -> str:
    """SHA-256 over the plan's statements as a JSON array (UTF-8, no whitespace)."""
    return hashlib.sha256(json.dumps(plan, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()

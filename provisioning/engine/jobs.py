"""What one attempt carries between its steps: the Outcome of a request, and a Job per claimed request."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from provisioning.errors import TargetError
from provisioning.plans import Step


class Outcome(StrEnum):
    """How an attempt ended for a request: apply()'s answer and an Execution row's `outcome`.

    A StrEnum, so it compares equal to the strings stored in Execution.outcome and logged."""

    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"  # an earlier attempt committed; nothing ran again
    FAILED = "failed"
    RETRYING = "retrying"  # a transient error: queued again, retried with backoff
    WORKER_LOST = "worker_lost"  # the attempt's worker died; another took the request over
    SKIPPED = "skipped"  # not claimable: finished, cancelled, or another plan version's message
    BUSY = "busy"  # another live worker holds the request


@dataclass
class TargetResult:
    """What a plan did on the target: applied now or found already applied, statement by statement."""

    outcome: Outcome  # APPLIED | ALREADY_APPLIED
    statements: list[dict]
    database: str


@dataclass
class Job:
    """One claimed request inside an attempt: its execution, verified plan and outcome."""

    execution: Any
    steps: list[Step] = field(default_factory=list)
    password: str | None = None  # the generated password of a login role, set before the target
    log_rows: list[dict] = field(default_factory=list)
    result: TargetResult | None = None
    error: TargetError | None = None
    terminated: list[dict] = field(default_factory=list)

    @property
    def request(self) -> Any:
        return self.execution.request

    @property
    def pending(self) -> bool:
        return self.result is None and self.error is None

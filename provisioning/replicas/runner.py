"""Builds the replica an approved `replica` request asks for; called by the engine.

The engine (provisioning/engine/) does for replica requests what it does for SQL plans:
it holds the request's liveness lock, claims it (queued → running, one Execution row per
attempt, `request.running`; a running request whose worker died is taken over and its attempt
marked `worker_lost`), verifies the plan hash, and records `applied` / `failed` / `retrying`
with the audit events. Between claim and record it calls apply() here, which runs the build
through the primary's driver and returns the steps done as Execution statement rows.

apply() is idempotent: a replica this request already finished is returned as is, and a build
an earlier attempt left half-done (killed worker, orphaned pg_basebackup, a postmaster) is
cleaned up by the driver before it starts again. A failure cleans up too, then raises the
engine's error kinds: TransientTargetError when the primary could not be reached (the task
retries with backoff), PermanentTargetError otherwise (the request fails with the reason).
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
import structlog

from portal.choices import RequestType
from portal.errors import DomainError
from portal.logging import redact_text
from portal.models import ChangeRequest
from provisioning.errors import PermanentTargetError, TargetError, classify
from provisioning.replicas.base import driver_for

log = structlog.get_logger(__name__)


def build_key(request: ChangeRequest) -> str:
    """The deterministic build folder name of a request: a retry finds what a killed try left."""
    return f"request-{request.pk}"


def apply(request: ChangeRequest, *, worker: str = "") -> list[dict[str, Any]]:
    """Build (or finish building) the request's replica; returns [{"sql", "ms", "error"}] per step."""
    if request.type != RequestType.REPLICA:
        raise PermanentTargetError(f"the replica runner got a {request.type} request")
    primary = request.instance
    name = request.payload["name"]
    key = build_key(request)
    driver = driver_for(primary)
    lines = {step_key: line.as_string(None) for step_key, line in driver.describe(name=name)}
    done: list[dict[str, Any]] = []

    def on_step(step_key: str, ms: float, details: dict[str, Any]) -> None:
        done.append({"sql": lines.get(step_key, f"-- {step_key}"), "ms": round(ms, 1), "error": ""})

    try:
        replica = driver.create(primary=primary, name=name, key=key, request_id=request.pk, on_step=on_step)
    except Exception as exc:
        error = _classify(exc)
        log.warning("replica.build_failed", request=request.pk, worker=worker, error=error.message)
        with contextlib.suppress(Exception):
            driver.abandon(primary=primary, name=name, key=key, request_id=request.pk)
        raise error from exc
    if not done:
        # An earlier attempt finished the build and died before recording it.
        done = [{"sql": text, "ms": None, "error": ""} for text in lines.values()]
    log.info("replica.built", request=request.pk, replica=replica.name, port=replica.port, worker=worker)
    return done


def _classify(exc: BaseException) -> TargetError:
    if isinstance(exc, TargetError):
        return exc
    if isinstance(exc, psycopg.Error):
        return classify(exc)
    if isinstance(exc, DomainError):
        return PermanentTargetError(exc.detail)
    return PermanentTargetError(redact_text(str(exc)) or type(exc).__name__)

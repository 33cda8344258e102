"""The portal's configuration from the environment: every variable read here, typed, with its default.

`Config.from_env()` reads `os.environ` (or a mapping given) once and returns a frozen `Config`;
`portal/settings/base.py` builds Django settings from it, and the rest of the code reads
`django.conf.settings` (code that runs without Django, such as `provisioning/clusters.py` and
the embedded servers' start, reads a `Config`). A malformed value is an `ImproperlyConfigured`
that names the variable; an empty value counts as unset. README.md's configuration table lists
every variable read here (tests/portal/test_configuration_documented.py keeps them in step).

Reading the environment is all this module does: it starts nothing and writes nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
_T = TypeVar("_T")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Environment:
    """Typed reads of one environment mapping; each method names its variable in any error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        # Unset and empty are the same: `FOO=` in a compose file or a unit means "the default".
        return value.strip() if value is not None and value.strip() else None

    @staticmethod
    def _malformed(name: str, value: str, expected: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"{name}={value!r} is not {expected}")

    def text(self, name: str, default: _T) -> str | _T:
        value = self._raw(name)
        return default if value is None else value

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise self._malformed(name, value, "a boolean (1/0, true/false, yes/no, on/off)")

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        return self._numeric(name, default, int, "an integer", minimum)

    def number(self, name: str, default: float, *, minimum: float | None = None) -> float:
        return self._numeric(name, default, float, "a number", minimum)

    def _numeric(self, name: str, default: Any, convert: Any, kind: str, minimum: Any) -> Any:
        """`convert` of the variable (or `default` when unset), refused when malformed, not finite
        (nan, inf: never a count or a duration) or under `minimum`, naming the variable."""
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = convert(value)
        except ValueError:
            raise self._malformed(name, value, kind) from None
        if number != number or number in (float("inf"), float("-inf")):
            raise self._malformed(name, value, f"a finite {kind.removeprefix('a ').removeprefix('an ')}")
        if minimum is not None and number < minimum:
            raise self._malformed(name, value, f"{kind} of at least {minimum}")
        return number

    def items(self, name: str, default: str) -> tuple[str, ...]:
        """A comma-separated list (blanks dropped); `default` is written the way the variable would be."""
        value = self._raw(name)
        return tuple(item.strip() for item in (default if value is None else value).split(",") if item.strip())

    def path(self, name: str, default: _T) -> Path | _T:
        value = self._raw(name)
        return default if value is None else Path(value).expanduser().resolve()

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        """A URL with one of `schemes` (and a host, for http and https), or None when unset."""
        value = self._raw(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            raise self._malformed(name, value, f"a URL starting with {' or '.join(s + '://' for s in schemes)}")
        if parts.scheme in ("http", "https", "tcp", "tcp+tls"):
            # Only web and plain TCP addresses are checked further: broker and database URLs have forms
            # of their own (several Sentinel hosts separated by ";", a unix socket path) that urlsplit misreads.
            try:
                port = parts.port
            except ValueError:
                raise self._malformed(name, value, "a URL with a numeric port") from None
            if not parts.hostname:
                raise self._malformed(name, value, "a URL with a host")
            if parts.scheme.startswith("tcp") and (port is None or parts.path not in ("", "/")):
                raise self._malformed(name, value, "tcp://host:port or tcp+tls://host:port")
        return value


def _oidc_required(value: str, name: str, issuer: str | None) -> str:
    """A setting single sign-on cannot do without: refused at start-up when the issuer is set and it is not."""
    if issuer and not value:
        raise ImproperlyConfigured(f"{name} must be set when PORTAL_OIDC_ISSUER is (see docs/identity.md)")
    return value


def _max_rate(value: str) -> str:
    """pg_basebackup's --max-rate: digits with an optional k or M suffix, or empty (unlimited)."""
    if value and not re.fullmatch(r"[1-9][0-9]{0,9}[kM]?", value):
        raise ImproperlyConfigured(f"PORTAL_BACKUP_MAX_RATE={value!r} is not a rate such as 32k or 100M")
    return value


def default_web_processes() -> int:
    """gunicorn processes when WEB_CONCURRENCY is unset: two per core, at most 8. Python runs one
    thread of a process at a time, so threads only overlap waits; the cores are used by processes
    (bench/load.py, idle 2-core machine: 4 processes x 2 threads kept every endpoint's p95 under
    100 ms where 2 x 4 did not). Beyond 8, set it for the host (each process holds its own
    database connections, one per thread)."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


@dataclass(frozen=True)
class Config:
    """Every setting the environment can change, typed; field comments say what each is for."""

    # --- state folder, keys, the portal's own services -----------------------------------
    var_dir: Path  # PORTAL_VAR_DIR: embedded servers, generated keys, local clusters
    secret_key: str | None  # None: generated once into var/secret.key (by portal.embedded.ensure_keys)
    fernet_keys: tuple[str, ...]  # newest first; empty: generated once into var/fernet.key
    database_url: str | None  # None: the embedded PostgreSQL under var/portal-db
    redis_url: str | None  # None: the embedded Redis on a unix socket
    clusters_dir: Path
    pg_bin: Path | None  # None: the pgserver wheel's binaries
    # --- web ---------------------------------------------------------------------------
    debug: bool
    environment: str
    base_url: str  # without a trailing slash; "" = links are paths only
    allowed_hosts: tuple[str, ...]
    csrf_trusted_origins: tuple[str, ...]
    allowed_targets: tuple[str, ...]
    metrics_token: str
    metrics_allowed: tuple[str, ...]
    session_seconds: int
    secure_cookies: bool
    trust_proxy: bool
    ssl_redirect: bool
    hsts_seconds: int
    hsts_preload: bool
    login_failures: int
    # --- API tokens and MFA (portal/services/tokens.py, portal/services/mfa.py) -----------------
    api_token_days: int  # a new token's lifetime when none is asked for
    api_token_max_days: int  # the longest lifetime a token may be given
    mfa_required_for_admins: bool  # platform admins must use TOTP for local sign-in (off in the demo)
    # --- sign-in: local passwords and OpenID Connect (docs/identity.md) -----------------------
    local_login: bool  # PORTAL_LOCAL_LOGIN=off: no password sign-in, page nor API (break-glass off)
    oidc_issuer: str | None  # None: no single sign-on; else the issuer (its discovery document)
    oidc_client_id: str
    oidc_client_secret: str
    oidc_scopes: tuple[str, ...]
    oidc_groups_claim: str
    oidc_group_map: Path | None  # a JSON file of group mappings loaded into an empty table
    oidc_name: str  # the button reads "Sign in with <name>"
    oidc_leeway_seconds: int  # clock skew allowed on the ID token's times
    oidc_check_minutes: int  # 0: off; else refresh each linked user's groups this often
    log_level: str
    # --- mail --------------------------------------------------------------------------
    smtp_host: str
    smtp_port: int
    smtp_starttls: bool
    smtp_user: str
    smtp_password: str
    email_backend: str
    from_email: str
    # --- provisioning engine, outbox, secrets, replicas ----------------------------------
    apply_max_retries: int
    apply_backoff_max_seconds: int
    apply_batch_max: int
    index_statement_timeout_ms: int
    stall_seconds: float
    outbox_resend_seconds: float
    outbox_sweep_seconds: float
    secret_ttl_hours: float
    executor_login_rotate_days: float
    replica_backup_max_rate: str
    replica_build_timeout: float
    replica_max_lag_bytes: int
    # --- SIEM forwarding of the audit log (audit/siem.py) ----------------------------------
    siem_syslog: str | None  # tcp://host:port or tcp+tls://host:port; None: no syslog collector
    siem_syslog_ca_file: Path | None  # CA bundle the TLS collector's certificate must chain to
    siem_https_url: str | None  # https URL JSON lines are POSTed to; None: no HTTPS collector
    siem_https_token: str  # bearer token sent to the HTTPS collector
    siem_https_ca_file: Path | None
    siem_batch_size: int
    siem_interval_seconds: float
    siem_timeout_seconds: float
    siem_backoff_max_seconds: float
    siem_lag_alert: int  # events behind the head that raise the lag alert
    # --- access reviews, break-glass (issue #18) ----------------------------------------------
    activity_sample_seconds: float
    break_glass_max_hours: float
    # --- audit retention (audit/archive.py) ----------------------------------------------------
    audit_online_months: int  # whole months kept online before the current one (>= 3, PCI DSS 10.5.1)
    audit_retention_months: int  # an archive is kept this long after its month ends (>= 12, PCI DSS 10.5.1)
    audit_archive_dir: Path
    # --- audit chain keys and checkpoints (audit/keys.py, audit/checkpoints.py) ----------------
    audit_keys: tuple[str, ...]  # newest first; empty: generated once into var/audit.key
    audit_checkpoint_dir: Path  # signed checkpoints, write-once files outside the database
    audit_checkpoint_events: int  # a checkpoint at least every this many events
    audit_checkpoint_minutes: float  # ... and at least this often while events arrive
    # --- monitoring of managed instances (issue #21, docs/monitoring.md) -------------------------
    monitoring_sample_seconds: float  # how often beat samples each instance
    monitoring_raw_hours: float  # raw samples kept this long, then folded into hourly rows
    monitoring_retention_days: float  # hourly rows kept this long
    monitoring_lag_bytes: float  # default thresholds of the alerts (per-instance overrides in AlertThreshold)
    monitoring_xid_age: float
    monitoring_blocked_sessions: float
    monitoring_long_transaction_seconds: float
    monitoring_connections_percent: float
    monitoring_failed_samples: float
    dictionary_refresh_minutes: float  # how often the data dictionary of every managed database is read
    # --- backups and restore drills (issue #20, docs/backups.md) -----------------------------------
    backup_root: Path  # the local folder driver's root (provisioning/backups/storage.py)
    backup_max_rate: str  # pg_basebackup --max-rate ("" = unlimited): spares a busy cluster's disks
    backup_archive_timeout: int  # archive_timeout of archiving clusters: bounds the RPO of an idle one
    backup_late_factor: float  # a backup is late after this many times its policy's interval
    # --- `manage.py run` (make run) --------------------------------------------------------
    demo_password: str | None  # None: generated once into var/demo-password
    port: int
    bind: str
    web_concurrency: int
    web_threads: int
    web_keepalive: int
    worker_concurrency: int
    worker_nice: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """The configuration `environ` (default: this process's environment) describes.

        Every variable is read unconditionally, so a malformed one fails here, at start-up, even
        when the setting that uses it would not be looked at today.
        """
        env = Environment(os.environ if environ is None else environ)
        var_dir = env.path("PORTAL_VAR_DIR", (BASE_DIR / "var").resolve())
        debug = env.flag("PORTAL_DEBUG", False)
        environment = env.text("PORTAL_ENVIRONMENT", "demo")
        demo = environment == "demo"
        base_url = (env.url("PORTAL_BASE_URL", ("http", "https")) or "").rstrip("/")
        smtp_host = env.text("PORTAL_SMTP_HOST", "")
        smtp_starttls = env.flag("PORTAL_SMTP_STARTTLS", False)
        oidc_issuer = env.url("PORTAL_OIDC_ISSUER", ("http", "https"))
        return cls(
            var_dir=var_dir,
            secret_key=env.text("PORTAL_SECRET_KEY", None),
            fernet_keys=env.items("PORTAL_FERNET_KEYS", ""),
            database_url=env.url("DATABASE_URL", ("postgres", "postgresql")),
            redis_url=env.url("REDIS_URL", ("redis", "rediss", "redis+socket", "unix", "sentinel")),
            clusters_dir=env.path("PORTAL_CLUSTERS_DIR", var_dir / "clusters"),
            pg_bin=env.path("PORTAL_PG_BIN", None),
            debug=debug,
            environment=environment,
            base_url=base_url,
            allowed_hosts=env.items("PORTAL_ALLOWED_HOSTS", ""),
            csrf_trusted_origins=env.items("PORTAL_CSRF_TRUSTED_ORIGINS", ""),
            allowed_targets=env.items("PORTAL_ALLOWED_TARGETS", "127.0.0.0/8,::1/128,localhost"),
            metrics_token=env.text("PORTAL_METRICS_TOKEN", ""),
            metrics_allowed=env.items("PORTAL_METRICS_ALLOWED", "127.0.0.0/8,::1/128"),
            session_seconds=env.integer("PORTAL_SESSION_SECONDS", 8 * 3600, minimum=1),
            secure_cookies=env.flag("PORTAL_SECURE_COOKIES", not debug and not demo),
            trust_proxy=env.flag("PORTAL_TRUST_PROXY", False),
            ssl_redirect=env.flag("PORTAL_SSL_REDIRECT", False),
            hsts_seconds=env.integer("PORTAL_HSTS_SECONDS", 0 if demo else 31536000, minimum=0),
            hsts_preload=env.flag("PORTAL_HSTS_PRELOAD", not demo),
            login_failures=env.integer("PORTAL_LOGIN_FAILURES", 5, minimum=1),
            api_token_days=env.integer("PORTAL_API_TOKEN_DAYS", 30, minimum=1),
            api_token_max_days=env.integer("PORTAL_API_TOKEN_MAX_DAYS", 365, minimum=1),
            mfa_required_for_admins=env.flag("PORTAL_MFA_REQUIRED_FOR_ADMINS", not demo),
            local_login=env.flag("PORTAL_LOCAL_LOGIN", True),
            oidc_issuer=oidc_issuer,
            oidc_client_id=_oidc_required(env.text("PORTAL_OIDC_CLIENT_ID", ""), "PORTAL_OIDC_CLIENT_ID", oidc_issuer),
            oidc_client_secret=_oidc_required(env.text("PORTAL_OIDC_CLIENT_SECRET", ""), "PORTAL_OIDC_CLIENT_SECRET",
                                              oidc_issuer),
            oidc_scopes=tuple(env.text("PORTAL_OIDC_SCOPES", "openid email profile").replace(",", " ").split()),
            oidc_groups_claim=env.text("PORTAL_OIDC_GROUPS_CLAIM", "groups"),
            oidc_group_map=env.path("PORTAL_OIDC_GROUP_MAP", None),
            oidc_name=env.text("PORTAL_OIDC_NAME", "single sign-on"),
            oidc_leeway_seconds=env.integer("PORTAL_OIDC_LEEWAY_SECONDS", 60, minimum=0),
            oidc_check_minutes=env.integer("PORTAL_OIDC_CHECK_MINUTES", 0, minimum=0),
            log_level=env.text("PORTAL_LOG_LEVEL", "INFO"),
            smtp_host=smtp_host,
            smtp_port=env.integer("PORTAL_SMTP_PORT", 587 if smtp_starttls else 25, minimum=1),
            smtp_starttls=smtp_starttls,
            smtp_user=env.text("PORTAL_SMTP_USER", ""),
            smtp_password=env.text("PORTAL_SMTP_PASSWORD", ""),
            email_backend=env.text("PORTAL_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend" if smtp_host
                                   else "django.core.mail.backends.console.EmailBackend"),
            from_email=env.text("PORTAL_FROM_EMAIL", "dbportal@localhost"),
            apply_max_retries=env.integer("PORTAL_APPLY_MAX_RETRIES", 8, minimum=0),
            apply_backoff_max_seconds=env.integer("PORTAL_APPLY_BACKOFF_MAX_SECONDS", 600, minimum=0),
            apply_batch_max=env.integer("PORTAL_APPLY_BATCH_MAX", 50, minimum=1),
            index_statement_timeout_ms=env.integer("PORTAL_INDEX_STATEMENT_TIMEOUT_MS", 30 * 60 * 1000, minimum=0),
            stall_seconds=env.number("PORTAL_STALL_SECONDS", 10.0, minimum=0),
            outbox_resend_seconds=env.number("PORTAL_OUTBOX_RESEND_SECONDS", 5.0, minimum=0),
            outbox_sweep_seconds=env.number("PORTAL_OUTBOX_SWEEP_SECONDS", 5.0, minimum=0.1),
            secret_ttl_hours=env.number("PORTAL_SECRET_TTL_HOURS", 24.0, minimum=0),
            executor_login_rotate_days=env.number("PORTAL_EXECUTOR_LOGIN_ROTATE_DAYS", 30.0, minimum=0),
            replica_backup_max_rate=env.text("PORTAL_REPLICA_BACKUP_MAX_RATE", ""),
            replica_build_timeout=env.number("PORTAL_REPLICA_BUILD_TIMEOUT", 3600.0, minimum=1),
            replica_max_lag_bytes=env.integer("PORTAL_REPLICA_MAX_LAG_BYTES", 256 * 1024 * 1024, minimum=0),
            siem_syslog=env.url("PORTAL_SIEM_SYSLOG", ("tcp", "tcp+tls")),
            siem_syslog_ca_file=env.path("PORTAL_SIEM_SYSLOG_CA_FILE", None),
            siem_https_url=env.url("PORTAL_SIEM_HTTPS_URL", ("https",)),
            siem_https_token=env.text("PORTAL_SIEM_HTTPS_TOKEN", ""),
            siem_https_ca_file=env.path("PORTAL_SIEM_HTTPS_CA_FILE", None),
            siem_batch_size=env.integer("PORTAL_SIEM_BATCH_SIZE", 500, minimum=1),
            siem_interval_seconds=env.number("PORTAL_SIEM_INTERVAL_SECONDS", 5.0, minimum=0.1),
            siem_timeout_seconds=env.number("PORTAL_SIEM_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            siem_backoff_max_seconds=env.number("PORTAL_SIEM_BACKOFF_MAX_SECONDS", 300.0, minimum=0),
            siem_lag_alert=env.integer("PORTAL_SIEM_LAG_ALERT", 10000, minimum=1),
            activity_sample_seconds=env.number("PORTAL_ACTIVITY_SAMPLE_SECONDS", 60.0, minimum=1),
            break_glass_max_hours=env.number("PORTAL_BREAK_GLASS_MAX_HOURS", 4.0, minimum=0.01),
            audit_online_months=env.integer("PORTAL_AUDIT_ONLINE_MONTHS", 3, minimum=3),
            audit_retention_months=env.integer("PORTAL_AUDIT_RETENTION_MONTHS", 12, minimum=12),
            audit_archive_dir=env.path("PORTAL_AUDIT_ARCHIVE_DIR", var_dir / "audit-archive"),
            audit_keys=env.items("PORTAL_AUDIT_KEYS", ""),
            audit_checkpoint_dir=env.path("PORTAL_AUDIT_CHECKPOINT_DIR", var_dir / "audit-checkpoints"),
            audit_checkpoint_events=env.integer("PORTAL_AUDIT_CHECKPOINT_EVENTS", 10_000, minimum=1),
            audit_checkpoint_minutes=env.number("PORTAL_AUDIT_CHECKPOINT_MINUTES", 5.0, minimum=0.1),
            monitoring_sample_seconds=env.number("PORTAL_MONITORING_SAMPLE_SECONDS", 60.0, minimum=1),
            monitoring_raw_hours=env.number("PORTAL_MONITORING_RAW_HOURS", 24.0, minimum=1),
            monitoring_retention_days=env.number("PORTAL_MONITORING_RETENTION_DAYS", 30.0, minimum=1),
            monitoring_lag_bytes=env.number("PORTAL_MONITORING_LAG_BYTES", 64 * 1024 * 1024, minimum=0),
            monitoring_xid_age=env.number("PORTAL_MONITORING_XID_AGE", 500_000_000, minimum=0),
            monitoring_blocked_sessions=env.number("PORTAL_MONITORING_BLOCKED_SESSIONS", 1, minimum=0),
            monitoring_long_transaction_seconds=env.number("PORTAL_MONITORING_LONG_TRANSACTION_SECONDS", 600.0,
                                                           minimum=0),
            monitoring_connections_percent=env.number("PORTAL_MONITORING_CONNECTIONS_PERCENT", 80.0, minimum=0),
            monitoring_failed_samples=env.number("PORTAL_MONITORING_FAILED_SAMPLES", 1, minimum=1),
            dictionary_refresh_minutes=env.number("PORTAL_DICTIONARY_REFRESH_MINUTES", 60.0, minimum=1),
            backup_root=env.path("PORTAL_BACKUP_ROOT", var_dir / "backups"),
            backup_max_rate=_max_rate(env.text("PORTAL_BACKUP_MAX_RATE", "")),
            backup_archive_timeout=env.integer("PORTAL_BACKUP_ARCHIVE_TIMEOUT", 60, minimum=1),
            backup_late_factor=env.number("PORTAL_BACKUP_LATE_FACTOR", 1.5, minimum=1),
            demo_password=env.text("PORTAL_DEMO_PASSWORD", None),
            port=env.integer("PORT", 8000, minimum=1),
            bind=env.text("PORTAL_BIND", "127.0.0.1"),
            web_concurrency=env.integer("WEB_CONCURRENCY", default_web_processes(), minimum=1),
            web_threads=env.integer("WEB_THREADS", 2, minimum=1),
            web_keepalive=env.integer("WEB_KEEPALIVE", 75, minimum=0),
            worker_concurrency=env.integer("WORKER_CONCURRENCY", 2, minimum=1),
            worker_nice=env.integer("WORKER_NICE", 10),
        )

"""All settings, built from the environment as `portal.conf` reads it (the table in README.md).

Importing this module starts nothing and writes nothing: it computes the embedded servers' URLs
and reads keys generated earlier; `portal.embedded` starts and writes, from the entry points.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import dj_database_url
import structlog

from portal.conf import BASE_DIR, Config
from portal.embedded import (
    AUDIT_KEY_FILE,
    FERNET_KEY_FILE,
    SECRET_KEY_FILE,
    database_url,
    read_generated_key,
    redis_client_url,
    redis_url,
)
from portal.logging import redact_secrets

config = Config.from_env()
VAR_DIR = config.var_dir

DEBUG = config.debug
# Unset in the environment: the keys portal.embedded.ensure_keys generated under var/ (an empty
# SECRET_KEY, before any were generated, makes Django refuse to start with a clear message).
SECRET_KEY = config.secret_key or read_generated_key(VAR_DIR, SECRET_KEY_FILE)
# Newest first; every key still decrypts, only the first encrypts (see docs/operations.md).
FERNET_KEYS = list(config.fernet_keys) or [k for k in read_generated_key(VAR_DIR, FERNET_KEY_FILE).split(",") if k]
CSRF_TRUSTED_ORIGINS = list(config.csrf_trusted_origins)
# Hosts that instances may live on: CIDRs or host names. Loopback only unless widened.
ALLOWED_TARGETS = list(config.allowed_targets)
PORTAL_ENVIRONMENT = config.environment
# Where people reach the portal (https://dbportal.example.com): notifications link to request
# pages under it. Unset, their links are paths only; `manage.py run` sets it to the URL it prints.
PORTAL_BASE_URL = config.base_url
# Host headers answered (a forged one would be echoed in pagination links): PORTAL_ALLOWED_HOSTS
# when set; else PORTAL_BASE_URL's host plus loopback (the health checks of `manage.py run` and of
# a local probe); else any host, as in development.
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


def _allowed_hosts() -> list[str]:
    if config.allowed_hosts:
        return list(config.allowed_hosts)
    base_host = urlsplit(PORTAL_BASE_URL).hostname if PORTAL_BASE_URL else None
    if base_host:
        return [f"[{base_host}]" if ":" in base_host else base_host, *LOOPBACK_HOSTS]
    return ["*"]


ALLOWED_HOSTS = _allowed_hosts()
# /metrics answers a bearer token (PORTAL_METRICS_TOKEN) or a client inside PORTAL_METRICS_ALLOWED.
METRICS_TOKEN = config.metrics_token
METRICS_ALLOWED = list(config.metrics_allowed)
# The local PostgreSQL clusters the portal creates (the demo instance, local instances, replicas).
CLUSTERS_DIR = config.clusters_dir
# Replicas: throttle pg_basebackup (e.g. "50M" per second; empty = no limit) and bound the build.
REPLICA_BACKUP_MAX_RATE = config.replica_backup_max_rate
REPLICA_BUILD_TIMEOUT = config.replica_build_timeout
# A standby further behind than this many bytes is reported unhealthy by the health job.
REPLICA_MAX_LAG_BYTES = config.replica_max_lag_bytes
# SIEM forwarding of the audit log (audit/siem.py, docs/audit.md "Streaming to a SIEM").
SIEM_SYSLOG = config.siem_syslog
SIEM_SYSLOG_CA_FILE = config.siem_syslog_ca_file
SIEM_HTTPS_URL = config.siem_https_url
SIEM_HTTPS_TOKEN = config.siem_https_token
SIEM_HTTPS_CA_FILE = config.siem_https_ca_file
SIEM_BATCH_SIZE = config.siem_batch_size
SIEM_INTERVAL_SECONDS = config.siem_interval_seconds
SIEM_TIMEOUT_SECONDS = config.siem_timeout_seconds
SIEM_BACKOFF_MAX_SECONDS = config.siem_backoff_max_seconds
SIEM_LAG_ALERT = config.siem_lag_alert
# Access reviews (issue #18): how often beat samples pg_stat_activity (last seen connected), and
# the longest a break-glass grant may last.
ACTIVITY_SAMPLE_SECONDS = config.activity_sample_seconds
BREAK_GLASS_MAX_HOURS = config.break_glass_max_hours

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "guardian",
    "django_htmx",
    "django_prometheus",
    "csp",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "portal",
    "provisioning",
    "audit",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "portal.middleware.ApiNoStoreMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Sees every 401 / 403 on the way out (permissions, CSRF), with the user known: audited.
    "portal.middleware.AccessDeniedAuditMiddleware",
    # Before any view reads input (sessions and the user are lazy until then): see portal/input_guard.py.
    "portal.middleware.InputGuardMiddleware",
    # A password sign-in that owes its TOTP code reaches only the MFA pages (portal/services/mfa.py).
    "portal.middleware.MfaSessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "portal.middleware.RequestContextMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes asks: it turns a lockout into a 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.navigation",
            ]
        },
    }
]

# --- the portal's own database --------------------------------------------------------
# Unset: the embedded server's URL; portal.embedded.ensure_embedded starts it (not this module).
EMBEDDED_DATABASE = config.database_url is None
DATABASE_URL = config.database_url or database_url(VAR_DIR)
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- broker and cache ----------------------------------------------------------------------
EMBEDDED_REDIS = config.redis_url is None
REDIS_URL = config.redis_url or redis_url(VAR_DIR)


CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": redis_client_url(REDIS_URL),
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A message not acked within this time is redelivered; longer than any plan may run.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_connect_timeout": 2}
CELERY_TASK_ALWAYS_EAGER = False

AUTHENTICATION_BACKENDS = [
    # First: refuses sign-in for a username + address locked out after repeated failures.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row
GUARDIAN_MONKEY_PATCH_USER = False
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = config.session_seconds
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = config.secure_cookies
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
CSRF_COOKIE_HTTPONLY = True  # htmx sends the token from the page (hx-headers), no script reads the cookie
SESSION_EXPIRE_AT_BROWSER_CLOSE = False
SESSION_SAVE_EVERY_REQUEST = True  # idle sessions expire after PORTAL_SESSION_SECONDS
TRUST_PROXY = config.trust_proxy
if TRUST_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = config.ssl_redirect
SECURE_HSTS_SECONDS = config.hsts_seconds
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = config.hsts_preload
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = [] if SECURE_SSL_REDIRECT or PORTAL_ENVIRONMENT == "demo" else [
    # TLS ends at the load balancer, which redirects to https; see README "Running at scale".
    "security.W008",
]

# Login throttling (django-axes): 5 failures lock a username from an address for 15 minutes.
AXES_FAILURE_LIMIT = config.login_failures
# API tokens (portal/services/tokens.py) and TOTP for platform admins (portal/services/mfa.py).
API_TOKEN_DAYS = config.api_token_days
API_TOKEN_MAX_DAYS = config.api_token_max_days
MFA_REQUIRED_FOR_ADMINS = config.mfa_required_for_admins
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_IPWARE_PROXY_COUNT = 1 if TRUST_PROXY else None
AXES_VERBOSE = False

# Sign-in (docs/identity.md): local passwords (off: single sign-on only) and OpenID Connect.
LOCAL_LOGIN = config.local_login
OIDC_ISSUER = config.oidc_issuer
OIDC_CLIENT_ID = config.oidc_client_id
OIDC_CLIENT_SECRET = config.oidc_client_secret
OIDC_SCOPES = list(config.oidc_scopes)
OIDC_GROUPS_CLAIM = config.oidc_groups_claim
OIDC_GROUP_MAP = config.oidc_group_map
OIDC_NAME = config.oidc_name
OIDC_LEEWAY_SECONDS = config.oidc_leeway_seconds
# The periodic check (docs/identity.md): 0 = off; else offline_access is asked for and beat asks the
# provider about every linked user this often (portal.identity_check).
OIDC_CHECK_MINUTES = config.oidc_check_minutes

# Content-Security-Policy (django-csp): no inline script, no CDN, nothing from elsewhere.
from csp.constants import NONE, SELF  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
        "base-uri": [SELF],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"  # created by portal.embedded.ensure_embedded
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Notifications by e-mail: over SMTP once PORTAL_SMTP_HOST is set (STARTTLS with
# PORTAL_SMTP_STARTTLS), else to the console backend, that is the worker's log.
EMAIL_HOST = config.smtp_host or "localhost"
EMAIL_USE_TLS = config.smtp_starttls
EMAIL_PORT = config.smtp_port
EMAIL_HOST_USER = config.smtp_user
EMAIL_HOST_PASSWORD = config.smtp_password
EMAIL_TIMEOUT = 10  # a mail server that hangs must not hold a worker
EMAIL_BACKEND = config.email_backend
DEFAULT_FROM_EMAIL = config.from_email

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "portal.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["portal.api.filters.FilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "portal.api.schema.PortalAutoSchema",
    "EXCEPTION_HANDLER": "portal.api.exception_handler.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["portal.api.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "dbportal API",
    "DESCRIPTION": "Self-service PostgreSQL: requests, approvals, provisioning and audit.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RequestStatusEnum": "portal.choices.RequestStatus",
        "EnvironmentEnum": "portal.choices.Environment",
        "BreakGlassOutcomeEnum": "portal.choices.BreakGlassOutcome",
        "InstanceStatusEnum": "portal.choices.InstanceStatus",
        "AlertKindEnum": "portal.models.monitoring.AlertKind",
    },
}

# --- logs: structured, JSON outside development; never a password or a DSN with one ------
LOG_LEVEL = config.log_level
# A traceback becomes text ("exception") and is redacted like any field before either renderer
# sees it: the console renderer would otherwise format exc_info itself, with rich's local
# variables (a password in a frame's locals) and without redaction.
_render = [structlog.processors.format_exc_info, redact_secrets,
           structlog.dev.ConsoleRenderer(colors=False) if DEBUG else structlog.processors.JSONRenderer()]
# The fields of every line, ours and the libraries' (Django, Celery): the context a request or a
# task bound (path and ip, task_name and task_id), logger, level, time; secrets redacted.
_log_fields = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact_secrets,
]
structlog.configure(
    processors=[*_log_fields, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
    logger_factory=structlog.stdlib.LoggerFactory(),
    cache_logger_on_first_use=True,
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "structured": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processors": [
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_render,
            ],
            "foreign_pre_chain": _log_fields,
        }
    },
    "filters": {"redact": {"()": "portal.logging.RedactFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "structured", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "celery": {"level": "INFO"},
    },
}

# --- provisioning engine (provisioning/engine/, outbox.py) -----------------------------------
# Transient target errors are retried with exponential backoff (capped) this many times.
PROVISIONING_MAX_RETRIES = config.apply_max_retries
PROVISIONING_RETRY_BACKOFF_MAX = config.apply_backoff_max_seconds
# statement_timeout of the steps that build or drop an index CONCURRENTLY outside the plan's
# transaction (the plan's own 60 s would cut a big table's build short); 0 = no limit.
PROVISIONING_INDEX_STATEMENT_TIMEOUT_MS = config.index_statement_timeout_ms
# A running request whose worker holds no liveness lock for this long is taken over.
PROVISIONING_STALL_SECONDS = config.stall_seconds
# A worker applies up to this many queued role/schema/grant/revoke requests for one database in
# one target transaction (a savepoint each); 1 applies every request alone.
PROVISIONING_BATCH_MAX = config.apply_batch_max
# Outbox rows no worker has taken are re-sent after this long; beat runs the sweeper this often.
OUTBOX_RESEND_SECONDS = config.outbox_resend_seconds
OUTBOX_SWEEP_SECONDS = config.outbox_sweep_seconds
# Unrevealed generated passwords are wiped after this many hours.
SECRET_TTL_HOURS = config.secret_ttl_hours
# Executor logins (provisioning/executor_logins.py): their generated passwords are replaced this often.
EXECUTOR_LOGIN_ROTATE_DAYS = config.executor_login_rotate_days

# --- audit retention (audit/archive.py, docs/audit.md "Retention") ---------------------------
# Whole months older than the current one and the AUDIT_ONLINE_MONTHS before it are archived to
# AUDIT_ARCHIVE_DIR and detached; an archive is kept AUDIT_RETENTION_MONTHS after its month ends.
AUDIT_ONLINE_MONTHS = config.audit_online_months
AUDIT_RETENTION_MONTHS = config.audit_retention_months
AUDIT_ARCHIVE_DIR = config.audit_archive_dir
# --- audit chain keys and checkpoints (audit/keys.py, docs/audit.md "Keyed chain") -------------
# Newest first: the first key chains new events and signs checkpoints; every key still verifies.
AUDIT_KEYS = list(config.audit_keys) or [k for k in read_generated_key(VAR_DIR, AUDIT_KEY_FILE).split(",") if k]
AUDIT_CHECKPOINT_DIR = config.audit_checkpoint_dir
AUDIT_CHECKPOINT_EVENTS = config.audit_checkpoint_events
AUDIT_CHECKPOINT_MINUTES = config.audit_checkpoint_minutes
# --- monitoring of managed instances (issue #21, docs/monitoring.md) ----------------------------
MONITORING_SAMPLE_SECONDS = config.monitoring_sample_seconds
MONITORING_RAW_HOURS = config.monitoring_raw_hours
MONITORING_RETENTION_DAYS = config.monitoring_retention_days
DICTIONARY_REFRESH_MINUTES = config.dictionary_refresh_minutes
# Default alert thresholds by alert kind (portal.models.monitoring.AlertKind); an instance's
# AlertThreshold row overrides one (or turns it off).
MONITORING_THRESHOLDS = {
    "replication_lag": config.monitoring_lag_bytes,
    "wraparound": config.monitoring_xid_age,
    "blocked_sessions": config.monitoring_blocked_sessions,
    "long_transaction": config.monitoring_long_transaction_seconds,
    "connections": config.monitoring_connections_percent,
    "sample_failed": config.monitoring_failed_samples,
}

# --- backups and restore drills (issue #20, docs/backups.md) -----------------------------------
BACKUP_ROOT = config.backup_root
BACKUP_MAX_RATE = config.backup_max_rate
BACKUP_ARCHIVE_TIMEOUT = config.backup_archive_timeout
BACKUP_LATE_FACTOR = config.backup_late_factor

# --- `manage.py run` (make run): the one-machine runner and its children ----------------------
DEMO_PASSWORD = config.demo_password  # None: generated once into var/demo-password
WEB_PORT = config.port
WEB_BIND = config.bind
WEB_CONCURRENCY = config.web_concurrency
WEB_THREADS = config.web_threads
WEB_KEEPALIVE = config.web_keepalive
WORKER_CONCURRENCY = config.worker_concurrency
WORKER_NICE = config.worker_nice

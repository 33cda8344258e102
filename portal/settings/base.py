"""All settings, from the environment only (the table in README.md)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
import structlog
from cryptography.fernet import Fernet

from portal.embedded import redis_client_url
from portal.logging import redact_secrets

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("PORTAL_VAR_DIR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _generated(name: str, make) -> str:
    """A secret generated once and kept under var/ (demo and development only)."""
    path = VAR_DIR / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("PORTAL_DEBUG", False)
SECRET_KEY = os.environ.get("PORTAL_SECRET_KEY") or _generated("secret.key", lambda: secrets.token_urlsafe(50))
# Newest first; every key still decrypts, only the first encrypts (see docs/operations.md).
FERNET_KEYS = [
    k.strip()
    for k in (os.environ.get("PORTAL_FERNET_KEYS") or _generated("fernet.key", lambda: Fernet.generate_key().decode())).split(",")
    if k.strip()
]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("PORTAL_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]
# Hosts that instances may live on: CIDRs or host names. Loopback only unless widened.
ALLOWED_TARGETS = [
    t.strip() for t in os.environ.get("PORTAL_ALLOWED_TARGETS", "127.0.0.0/8,::1/128,localhost").split(",") if t.strip()
]
PORTAL_ENVIRONMENT = os.environ.get("PORTAL_ENVIRONMENT", "demo")
# Where people reach the portal (https://dbportal.example.com): notifications link to request
# pages under it. Unset, their links are paths only; `manage.py run` sets it to the URL it prints.
PORTAL_BASE_URL = os.environ.get("PORTAL_BASE_URL", "").rstrip("/")
# Host headers answered (a forged one would be echoed in pagination links): PORTAL_ALLOWED_HOSTS
# when set; else PORTAL_BASE_URL's host plus loopback (the health checks of `manage.py run` and of
# a local probe); else any host, as in development.
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


def _allowed_hosts() -> list[str]:
    listed = [h.strip() for h in os.environ.get("PORTAL_ALLOWED_HOSTS", "").split(",") if h.strip()]
    if listed:
        return listed
    base_host = urlsplit(PORTAL_BASE_URL).hostname if PORTAL_BASE_URL else None
    if base_host:
        return [f"[{base_host}]" if ":" in base_host else base_host, *LOOPBACK_HOSTS]
    return ["*"]


ALLOWED_HOSTS = _allowed_hosts()
# /metrics answers a bearer token (PORTAL_METRICS_TOKEN) or a client inside PORTAL_METRICS_ALLOWED.
METRICS_TOKEN = os.environ.get("PORTAL_METRICS_TOKEN", "")
METRICS_ALLOWED = [
    n.strip() for n in os.environ.get("PORTAL_METRICS_ALLOWED", "127.0.0.0/8,::1/128").split(",") if n.strip()
]
# The local PostgreSQL clusters the portal creates (the demo instance, local instances, replicas).
CLUSTERS_DIR = Path(os.environ.get("PORTAL_CLUSTERS_DIR", VAR_DIR / "clusters")).resolve()
# Replicas: throttle pg_basebackup (e.g. "50M" per second; empty = no limit) and bound the build.
REPLICA_BACKUP_MAX_RATE = os.environ.get("PORTAL_REPLICA_BACKUP_MAX_RATE", "")
REPLICA_BUILD_TIMEOUT = float(os.environ.get("PORTAL_REPLICA_BUILD_TIMEOUT", 3600))
# A standby further behind than this many bytes is reported unhealthy by the health job.
REPLICA_MAX_LAG_BYTES = int(os.environ.get("PORTAL_REPLICA_MAX_LAG_BYTES", 256 * 1024 * 1024))

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
    # Before any view reads input (sessions and the user are lazy until then): see portal/input_guard.py.
    "portal.middleware.InputGuardMiddleware",
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
EMBEDDED_DATABASE = not os.environ.get("DATABASE_URL")
if EMBEDDED_DATABASE:
    from portal.embedded import database_url

    DATABASE_URL = database_url(VAR_DIR)
else:
    DATABASE_URL = os.environ["DATABASE_URL"]
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- broker and cache ----------------------------------------------------------------------
EMBEDDED_REDIS = not os.environ.get("REDIS_URL")
if EMBEDDED_REDIS:
    from portal.embedded import redis_url

    REDIS_URL = redis_url(VAR_DIR)
else:
    REDIS_URL = os.environ["REDIS_URL"]


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
SESSION_COOKIE_AGE = int(os.environ.get("PORTAL_SESSION_SECONDS", 8 * 3600))
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("PORTAL_SECURE_COOKIES", not DEBUG and PORTAL_ENVIRONMENT != "demo")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
CSRF_COOKIE_HTTPONLY = True  # htmx sends the token from the page (hx-headers), no script reads the cookie
SESSION_EXPIRE_AT_BROWSER_CLOSE = False
SESSION_SAVE_EVERY_REQUEST = True  # idle sessions expire after PORTAL_SESSION_SECONDS
TRUST_PROXY = env_bool("PORTAL_TRUST_PROXY", False)
if TRUST_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("PORTAL_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = int(os.environ.get("PORTAL_HSTS_SECONDS", 0 if PORTAL_ENVIRONMENT == "demo" else 31536000))
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("PORTAL_HSTS_PRELOAD", PORTAL_ENVIRONMENT != "demo")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = [] if SECURE_SSL_REDIRECT or PORTAL_ENVIRONMENT == "demo" else [
    # TLS ends at the load balancer, which redirects to https; see README "Running at scale".
    "security.W008",
]

# Login throttling (django-axes): 5 failures lock a username from an address for 15 minutes.
AXES_FAILURE_LIMIT = int(os.environ.get("PORTAL_LOGIN_FAILURES", 5))
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_IPWARE_PROXY_COUNT = 1 if TRUST_PROXY else None
AXES_VERBOSE = False

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
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Notifications by e-mail: over SMTP once PORTAL_SMTP_HOST is set (STARTTLS with
# PORTAL_SMTP_STARTTLS), else to the console backend, that is the worker's log.
EMAIL_HOST = os.environ.get("PORTAL_SMTP_HOST", "") or "localhost"
EMAIL_USE_TLS = env_bool("PORTAL_SMTP_STARTTLS", False)
EMAIL_PORT = int(os.environ.get("PORTAL_SMTP_PORT", 587 if EMAIL_USE_TLS else 25))
EMAIL_HOST_USER = os.environ.get("PORTAL_SMTP_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("PORTAL_SMTP_PASSWORD", "")
EMAIL_TIMEOUT = 10  # a mail server that hangs must not hold a worker
EMAIL_BACKEND = os.environ.get("PORTAL_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend"
                               if os.environ.get("PORTAL_SMTP_HOST") else "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.environ.get("PORTAL_FROM_EMAIL", "dbportal@localhost")

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
    "EXCEPTION_HANDLER": "portal.api.errors.exception_handler",
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
        "InstanceStatusEnum": "portal.choices.InstanceStatus",
    },
}

# --- logs: structured, JSON outside development; never a password or a DSN with one ------
LOG_LEVEL = os.environ.get("PORTAL_LOG_LEVEL", "INFO")
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

# --- provisioning engine (provisioning/executor.py, outbox.py) -------------------------------
# Transient target errors are retried with exponential backoff (capped) this many times.
PROVISIONING_MAX_RETRIES = int(os.environ.get("PORTAL_APPLY_MAX_RETRIES", "8"))
PROVISIONING_RETRY_BACKOFF_MAX = int(os.environ.get("PORTAL_APPLY_BACKOFF_MAX_SECONDS", "600"))
# statement_timeout of the steps that build or drop an index CONCURRENTLY outside the plan's
# transaction (the plan's own 60 s would cut a big table's build short); 0 = no limit.
PROVISIONING_INDEX_STATEMENT_TIMEOUT_MS = int(os.environ.get("PORTAL_INDEX_STATEMENT_TIMEOUT_MS", "1800000"))
# A running request whose worker holds no liveness lock for this long is taken over.
PROVISIONING_STALL_SECONDS = float(os.environ.get("PORTAL_STALL_SECONDS", "10"))
# A worker applies up to this many queued role/schema/grant/revoke requests for one database in
# one target transaction (a savepoint each); 1 applies every request alone.
PROVISIONING_BATCH_MAX = int(os.environ.get("PORTAL_APPLY_BATCH_MAX", "50"))
# Outbox rows no worker has taken are re-sent after this long.
OUTBOX_RESEND_SECONDS = float(os.environ.get("PORTAL_OUTBOX_RESEND_SECONDS", "5"))
# Unrevealed generated passwords are wiped after this many hours.
SECRET_TTL_HOURS = float(os.environ.get("PORTAL_SECRET_TTL_HOURS", "24"))
# Executor logins (provisioning/executor_logins.py): their generated passwords are replaced this often.
EXECUTOR_LOGIN_ROTATE_DAYS = float(os.environ.get("PORTAL_EXECUTOR_LOGIN_ROTATE_DAYS", "30"))

"""A real OpenID Connect provider (panva/oidc-provider under Node) on loopback, in its own process.

`npm ci` installs the pinned package (tests/identity/provider/package-lock.json) once into
var/npm/oidc-provider-<hash of the lock>/ (CI installs it itself the first time; later runs reuse
it). The provider's users, groups and signing keys live in a state folder the test changes
(see provider/server.mjs). Also run by hand: `python -m tests.identity.provider_process` (docs/identity.md).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import requests
from django.test import override_settings

SOURCE = Path(__file__).resolve().parent / "provider"
ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "dbportal-test"
CLIENT_SECRET = "test-client-secret-not-for-production"


def node_modules_dir() -> Path:
    """The folder holding server.mjs and its node_modules, installed with `npm ci` when missing."""
    lock = (SOURCE / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (SOURCE / "package.json").read_bytes()).hexdigest()[:12]
    target = ROOT / "var" / "npm" / f"oidc-provider-{digest}"
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # xdist workers and parallel runs install once
        if not (target / "node_modules" / "oidc-provider" / "package.json").exists():
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError("npm is not installed: the identity tests run a real OpenID provider under Node")
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(SOURCE / name, target / name)
            subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=target, check=True,
                           timeout=600, capture_output=True)
        shutil.copyfile(SOURCE / "server.mjs", target / "server.mjs")
    return target


class OidcProvider:
    """One provider process; `users` and `rotate_keys()` change what it answers."""

    def __init__(self, state_dir: Path, redirect_uris: list[str], *, groups_claim: str = "groups") -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.code_dir = node_modules_dir()
        self.redirect_uris = redirect_uris
        (self.state_dir / "config.json").write_text(json.dumps(
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": redirect_uris,
             "groups_claim": groups_claim}))
        if not (self.state_dir / "users.json").exists():
            self.set_users({})
        self.process: subprocess.Popen | None = None
        self.issuer = ""
        self.port = 0
        self.clock_skew_seconds = 0  # the provider's clock ahead (+) or behind (-) of this machine's
        self.id_token_ttl = 3600

    # --- what it knows ---------------------------------------------------------------------------
    def set_users(self, users: dict[str, dict]) -> None:
        path = self.state_dir / "users.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(users))
        tmp.replace(path)

    def set_groups(self, username: str, groups: list[str]) -> None:
        users = json.loads((self.state_dir / "users.json").read_text())
        users.setdefault(username, {})["groups"] = groups
        self.set_users(users)

    @property
    def kid(self) -> str:
        return json.loads((self.state_dir / "keys.json").read_text())["keys"][0]["kid"]

    # --- the process -----------------------------------------------------------------------------
    def start(self) -> str:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed")
        log = open(self.state_dir / "provider.log", "ab")
        self.process = subprocess.Popen([node, str(self.code_dir / "server.mjs"), str(self.state_dir), str(self.port)],
                                        stdout=subprocess.PIPE, stderr=log, cwd=self.code_dir,
                                        env={**os.environ, "OIDC_CLOCK_SKEW_SECONDS": str(self.clock_skew_seconds),
                                             "OIDC_ID_TOKEN_TTL": str(self.id_token_ttl)})
        log.close()
        # Node's cold start (loading oidc-provider) took over 20 s once on a loaded 2-CPU CI machine;
        # and a start that prints nothing at all happened too (start_with_retries tries again).
        ready, _, _ = select.select([self.process.stdout], [], [], 45)
        if not ready:
            self.stop()
            raise RuntimeError(f"the provider did not start: see {self.state_dir / 'provider.log'}")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the provider exited: see {self.state_dir / 'provider.log'}")
        self.issuer = json.loads(line)["issuer"]
        self.port = urlsplit(self.issuer).port or 0
        return self.issuer

    def start_with_retries(self, attempts: int = 3) -> str:
        """start(), again with a new process when one neither answers nor exits (seen once in CI)."""
        for attempt in range(attempts):
            try:
                return self.start()
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process is not None and self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def restart(self) -> None:
        """Same address and issuer (the port is kept), new process."""
        self.stop()
        for _ in range(50):
            try:
                self.start()
                return
            except (RuntimeError, json.JSONDecodeError):
                time.sleep(0.1)
        raise RuntimeError("the provider did not restart")

    def rotate_keys(self) -> None:
        """A new signing key (new kid) and the old one gone, as after a provider's key rotation."""
        (self.state_dir / "keys.json").unlink(missing_ok=True)
        self.restart()


def portal_settings(provider: OidcProvider, **extra):
    """The portal pointed at `provider` (Django's override_settings; the live server sees it too)."""
    return override_settings(OIDC_ISSUER=provider.issuer, OIDC_CLIENT_ID=CLIENT_ID, OIDC_CLIENT_SECRET=CLIENT_SECRET,
                             OIDC_SCOPES=["openid", "email", "profile", "groups"], OIDC_GROUPS_CLAIM="groups",
                             OIDC_GROUP_MAP=None, OIDC_NAME="Test IdP", OIDC_LEEWAY_SECONDS=60, LOCAL_LOGIN=True,
                             **extra)


# --- a user agent at the provider (the HTTP client stands for the browser) ----------------------

_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"', re.I)


def provider_login(authorize_url: str, username: str, *, stop_at: str, session: requests.Session | None = None,
                   password: str = "any-password") -> str:
    """Follow the provider from `authorize_url`, fill its login form as `username`, and return the
    redirect that starts with `stop_at` (the portal's callback URL, with code and state)."""
    http = session or requests.Session()
    url = authorize_url
    for _ in range(20):
        if url.startswith(stop_at):
            return url
        response = http.get(url, allow_redirects=False, timeout=10)
        if response.is_redirect:
            url = urljoin(url, response.headers["Location"])
            continue
        match = _FORM_ACTION.search(response.text)
        if response.status_code != 200 or match is None:
            raise AssertionError(f"unexpected provider page {response.status_code}: {response.text[:500]}")
        action = urljoin(url, match.group(1).replace("&amp;", "&"))
        response = http.post(action, data={"prompt": "login", "login": username, "password": password},
                             allow_redirects=False, timeout=10)
        if not response.is_redirect:
            raise AssertionError(f"the provider's login form answered {response.status_code}: {response.text[:500]}")
        url = urljoin(action, response.headers["Location"])
    raise AssertionError("too many redirects at the provider")


def with_params(url: str, **params: str) -> str:
    """`url` with some query parameters replaced."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


if __name__ == "__main__":  # try single sign-on by hand: docs/identity.md
    state = ROOT / "var" / "oidc-provider"
    port = int(os.environ.get("OIDC_PROVIDER_PORT", "9000"))
    portal = os.environ.get("PORTAL_URL", "http://127.0.0.1:8000")
    provider = OidcProvider(state, [portal.rstrip("/") + "/login/oidc/callback/"])
    if not json.loads((state / "users.json").read_text()):
        provider.set_users({"erin": {"name": "Erin Example", "groups": ["dbportal-payments"]},
                            "rita": {"name": "Rita Reviewer", "groups": ["dbportal-reviewers"]}})
    provider.port = port
    # SIGTERM (make's trap, a service manager) ends it like Ctrl-C; the provider is stopped outside
    # the handler, so no wait() is re-entered while one is interrupted.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    issuer = provider.start()
    print(f"OpenID provider at {issuer}; users and groups in {state / 'users.json'} (read at every sign-in)\n"
          f"  PORTAL_OIDC_ISSUER={issuer} PORTAL_OIDC_CLIENT_ID={CLIENT_ID} "
          f"PORTAL_OIDC_CLIENT_SECRET={CLIENT_SECRET} PORTAL_OIDC_SCOPES='openid email profile groups'",
          flush=True)
    try:
        provider.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        provider.stop()
    sys.exit(0)

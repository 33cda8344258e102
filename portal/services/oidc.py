"""The OpenID Connect relying party: authorization code with PKCE through Authlib, and its failures.

What Authlib does for us (authlib/integrations/base_client): discovery from
`<PORTAL_OIDC_ISSUER>/.well-known/openid-configuration`, the `state` (kept in the session, single
use), the `nonce` (checked against the ID token), the PKCE verifier (S256), the ID token's
signature against the provider's JWKS, fetched again once when a token names a key it has not
seen (the provider rotated its keys), and the token's times with `PORTAL_OIDC_LEEWAY_SECONDS` of
clock skew. What this module adds: the discovery document's issuer must be the configured one,
an `iss` in the authorization response (RFC 9207) must be it too, every failure becomes one of two
errors with a reason fit for the audit log and the page, and a provider that cannot be reached
(refused, timed out, answering 5xx) is `ProviderUnavailable`, never a 500.

Nothing here decides who may sign in: portal/services/identity.py does, from the claims.
"""

from __future__ import annotations

from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.django_client import OAuth
from django.conf import settings
from joserfc.errors import JoseError

# Discovery, JWKS, token and userinfo calls give up after this long: the sign-in page must answer.
PROVIDER_TIMEOUT_SECONDS = 5
_clients: dict[tuple, Any] = {}


class SignInFailed(Exception):
    """The provider's answer was refused (state, nonce, signature, times, an error it sent back).
    `reason` is short, safe to show and to audit (never a token)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ProviderUnavailable(SignInFailed):
    """The provider could not be reached or answered with an error of its own."""


class GrantRefused(SignInFailed):
    """The provider refused a stored refresh token (invalid_grant): the user was disabled, deleted
    or signed out everywhere there, or the grant expired."""


def enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def scopes() -> list[str]:
    """The configured scopes, plus offline_access when the periodic check needs a refresh token."""
    wanted = list(settings.OIDC_SCOPES)
    if settings.OIDC_CHECK_MINUTES and "offline_access" not in wanted:
        wanted.append("offline_access")
    return wanted


def _client() -> Any:
    """The Authlib client of the configured provider, one per configuration (it caches the
    discovery document and the JWKS between sign-ins)."""
    key = (settings.OIDC_ISSUER, settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET, tuple(scopes()))
    client = _clients.get(key)
    if client is None:
        oauth = OAuth()
        client = oauth.register(
            name="oidc",
            server_metadata_url=settings.OIDC_ISSUER.rstrip("/") + "/.well-known/openid-configuration",
            client_id=settings.OIDC_CLIENT_ID,
            client_secret=settings.OIDC_CLIENT_SECRET,
            client_kwargs={"scope": " ".join(scopes()), "code_challenge_method": "S256",
                           "default_timeout": PROVIDER_TIMEOUT_SECONDS},
        )
        _clients[key] = client
    return client


def _metadata(client: Any) -> dict:
    try:
        metadata = client.load_server_metadata()
    except (requests.RequestException, ValueError) as exc:
        client.server_metadata = {}  # try discovery again next time
        raise ProviderUnavailable(f"discovery failed: {type(exc).__name__}") from None
    if metadata.get("issuer") != settings.OIDC_ISSUER:
        # OpenID Connect Discovery 1.0 §4.3: a document for another issuer is not this provider's.
        client.server_metadata = {}
        raise SignInFailed("the discovery document names another issuer")
    return metadata


def authorization_redirect(request: Any, redirect_uri: str) -> Any:
    """The redirect to the provider's authorization endpoint (state, nonce and PKCE verifier saved
    in the session)."""
    client = _client()
    _metadata(client)
    try:
        return client.authorize_redirect(request, redirect_uri)
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"provider unreachable: {type(exc).__name__}") from None


def authorization_complete(request: Any) -> tuple[dict, str]:
    """The verified claims of the user the provider sent back (ID token, plus userinfo when the
    groups claim is not in the ID token), and the refresh token if the provider gave one ("" if
    not). Raises SignInFailed / ProviderUnavailable."""
    client = _client()
    metadata = _metadata(client)
    if "iss" in request.GET and request.GET["iss"] != metadata["issuer"]:
        raise SignInFailed("the response names another issuer")
    try:
        token = client.authorize_access_token(request, leeway=settings.OIDC_LEEWAY_SECONDS)
    except MismatchingStateError:
        raise SignInFailed("state mismatch: the answer does not belong to a sign-in started here") from None
    except OAuthError as exc:
        raise SignInFailed(f"the provider refused: {exc.error or 'error'}") from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status >= 500 or status == 0:
            raise ProviderUnavailable(f"provider error {status}") from None
        raise SignInFailed(f"the provider refused the code ({status})") from None
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"provider unreachable: {type(exc).__name__}") from None
    except JoseError as exc:
        # Signature, unknown key after a refetch, nonce, audience, issuer, expiry.
        raise SignInFailed(f"ID token refused: {exc.error}: {exc.description or ''}".strip(": ")) from None
    except (AuthlibBaseError, KeyError, ValueError) as exc:
        raise SignInFailed(f"ID token refused: {type(exc).__name__}") from None
    claims = token.get("userinfo")
    if not claims:
        raise SignInFailed("no ID token in the answer")
    claims = dict(claims)
    if settings.OIDC_GROUPS_CLAIM not in claims and metadata.get("userinfo_endpoint"):
        claims.update(_userinfo(client, token, claims["sub"]))
    return claims, str(token.get("refresh_token") or "")


def refresh(refresh_token: str, subject: str) -> tuple[dict, str]:
    """The periodic check for one user: redeem `refresh_token` at the token endpoint and return the
    new ID token's verified claims (signature, issuer, audience, times; `sub` must be `subject`;
    groups from userinfo when absent) and the refresh token to keep (the new one, or the same).
    Raises GrantRefused (invalid_grant), ProviderUnavailable, or SignInFailed."""
    client = _client()
    metadata = _metadata(client)
    try:
        with client._get_oauth_client() as session:  # Authlib's own session: client auth, timeouts
            # No scope: the grant's own (RFC 6749 §6); asking again for offline_access can be refused.
            token = session.refresh_token(metadata["token_endpoint"], refresh_token=refresh_token, scope=None)
    except OAuthError as exc:
        if exc.error == "invalid_grant":
            raise GrantRefused("the provider refused the refresh token (invalid_grant)") from None
        raise SignInFailed(f"the provider refused: {exc.error or 'error'}") from None
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"provider unreachable: {type(exc).__name__}") from None
    try:
        claims = dict(client.parse_id_token(token, nonce=None, leeway=settings.OIDC_LEEWAY_SECONDS) or {})
    except JoseError as exc:
        raise SignInFailed(f"ID token refused: {exc.error}: {exc.description or ''}".strip(": ")) from None
    except (AuthlibBaseError, KeyError, ValueError) as exc:
        raise SignInFailed(f"ID token refused: {type(exc).__name__}") from None
    if not claims and metadata.get("userinfo_endpoint"):
        # No new ID token (allowed on refresh, OpenID Connect Core §12.2): userinfo answers.
        claims = {"sub": subject, **_userinfo(client, token, subject)}
    if claims.get("sub") != subject:
        raise SignInFailed("the refreshed ID token names another subject")
    if settings.OIDC_GROUPS_CLAIM not in claims and metadata.get("userinfo_endpoint"):
        claims.update(_userinfo(client, token, subject))
    return claims, str(token.get("refresh_token") or refresh_token)


def _userinfo(client: Any, token: dict, subject: str) -> dict:
    try:
        info = dict(client.userinfo(token=token))
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"userinfo failed: {type(exc).__name__}") from None
    if info.get("sub") != subject:
        # OpenID Connect Core §5.3.4: a userinfo answer for another subject is not used.
        raise SignInFailed("userinfo names another subject")
    return {k: v for k, v in info.items() if k == settings.OIDC_GROUPS_CLAIM}

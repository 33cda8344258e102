"""Fixtures of the single sign-on tests: a real OpenID provider process and the portal set up for it."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.identity.provider_process import CLIENT_ID, CLIENT_SECRET, OidcProvider

TEST_CALLBACK = "http://testserver/login/oidc/callback/"


def portal_settings(provider: OidcProvider, **extra):
    return override_settings(OIDC_ISSUER=provider.issuer, OIDC_CLIENT_ID=CLIENT_ID, OIDC_CLIENT_SECRET=CLIENT_SECRET,
                             OIDC_SCOPES=["openid", "email", "profile", "groups"], OIDC_GROUPS_CLAIM="groups",
                             OIDC_GROUP_MAP=None, OIDC_NAME="Test IdP", OIDC_LEEWAY_SECONDS=60, LOCAL_LOGIN=True,
                             **extra)


@pytest.fixture
def oidc_provider(tmp_path):
    """A provider for Django's test client (callback on http://testserver), the portal pointed at it."""
    provider = OidcProvider(tmp_path / "provider", [TEST_CALLBACK])
    provider.start()
    try:
        with portal_settings(provider):
            yield provider
    finally:
        provider.stop()

"""Fixtures of the single sign-on tests: a real OpenID provider process and the portal set up for it."""

from __future__ import annotations

import pytest

from tests.identity.provider_process import OidcProvider, portal_settings

TEST_CALLBACK = "http://testserver/login/oidc/callback/"


@pytest.fixture
def oidc_provider(tmp_path):
    """A provider for Django's test client (callback on http://testserver), the portal pointed at it."""
    provider = OidcProvider(tmp_path / "provider", [TEST_CALLBACK])
    provider.start_with_retries()
    try:
        with portal_settings(provider):
            yield provider
    finally:
        provider.stop()

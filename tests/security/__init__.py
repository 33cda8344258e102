"""Attacks on the portal, each a test that shows it refused or harmless (issue #14; docs/security.md)."""

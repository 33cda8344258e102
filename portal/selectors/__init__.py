"""Selectors: every read for a user goes through restrict()."""

"""Audit: the append-only, hash-chained event log, its exports and verification."""

"""The audit API: events, exports, verification, entitlements (auditors and admins; entitlements also reviewers)."""

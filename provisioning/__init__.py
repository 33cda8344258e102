"""Provisioning: everything that touches a managed cluster."""

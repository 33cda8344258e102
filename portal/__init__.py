"""The portal: teams, instances, requests, approvals, UI and API."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]

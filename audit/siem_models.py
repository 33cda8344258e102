"""SiemCursor: one row per SIEM collector, the last audit seq it acknowledged (audit/siem.py)."""

from django.db import models


class SiemCursor(models.Model):
    """Where forwarding to one collector stands. Written only by audit/siem.py (the forwarder) and
    the pause/resume service; read by the admin page, the API, /healthz and the metrics."""

    name = models.CharField(max_length=32, primary_key=True)  # "syslog" or "https"
    destination = models.CharField(max_length=300, blank=True)  # scheme://host:port, never a token or path
    last_seq = models.BigIntegerField(default=0)  # every event up to here was acknowledged
    # The cursor before the last acknowledged batch: a syslog collector's close says it read that
    # batch, not that it stored it, so the first failure after it sends the batch again from here.
    batch_from = models.BigIntegerField(default=0)
    state = models.CharField(max_length=16, default="ok")  # ok | failing | stopped
    paused = models.BooleanField(default=False)
    paused_by = models.CharField(max_length=150, blank=True)
    failures = models.PositiveIntegerField(default=0)  # consecutive failed attempts
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # backoff: no attempt before
    last_error = models.CharField(max_length=500, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)  # last acknowledged batch
    lagging = models.BooleanField(default=False)  # the lag alert is raised (cleared under the threshold)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} at {self.last_seq}"

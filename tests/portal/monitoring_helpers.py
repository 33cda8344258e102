"""What the monitoring tests share: a session blocked on a row of a table (tests/portal/conftest.py's
lock_table), and the open alerts."""

from __future__ import annotations

import threading
import time

import psycopg
from psycopg import sql

from portal.models import Alert
from portal.models.monitoring import AlertStatus
from tests.provisioning.helpers import admin_conn


class Blocker:
    """A transaction holding a row lock, and a second session waiting for it (on a thread)."""

    def __init__(self, cluster, table: str) -> None:
        self.holder = psycopg.connect(cluster.socket_conninfo("app"))
        self.holder.execute("SET application_name = 'blocker-test'")
        self.holder.execute(sql.SQL("UPDATE public.{} SET v = v + 1 WHERE id = 1").format(sql.Identifier(table)))
        self.holder_pid = self.holder.info.backend_pid
        self.waiter = admin_conn(cluster, "app")
        self.waiter_pid = self.waiter.info.backend_pid
        update = sql.SQL("UPDATE public.{} SET v = v + 10 WHERE id = 1").format(sql.Identifier(table))
        self.thread = threading.Thread(target=self.waiter.execute, args=(update,), daemon=True)
        self.thread.start()
        with admin_conn(cluster, "postgres") as probe:
            for _ in range(200):
                if probe.execute("SELECT cardinality(pg_blocking_pids(%s)) > 0", [self.waiter_pid]).fetchone()[0]:
                    break
                time.sleep(0.02)

    def release(self) -> None:
        self.holder.rollback()
        self.thread.join(timeout=10)
        self.holder.close()
        self.waiter.close()


def open_alerts(instance) -> set[str]:
    return set(Alert.objects.filter(instance=instance, status=AlertStatus.OPEN).values_list("kind", flat=True))

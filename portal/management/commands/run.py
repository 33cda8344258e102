"""`manage.py run` (what `make run` calls): the whole portal on one machine.

Starts the embedded PostgreSQL and Redis when DATABASE_URL / REDIS_URL are unset (and generated
the keys the environment does not give: manage.py, before settings load), migrates,
seeds the demo, starts local clusters that are down, then supervises gunicorn, a Celery
worker and Celery beat. Ctrl-C or SIGTERM stops everything it started, in reverse order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections

from portal import embedded
from portal.models import Instance
from portal.services.demo import PERSONAS, seed_demo
from portal.services.instances import local_cluster_for, local_instances_start


class Command(BaseCommand):
    help = "Run the portal: web, worker and beat, on embedded PostgreSQL and Redis by default."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=settings.WEB_PORT)
        parser.add_argument("--bind", default=settings.WEB_BIND)
        parser.add_argument("--no-demo", action="store_true", help="do not seed the demo")

    def handle(self, *args, **options):
        started = time.monotonic()
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False
        var_dir = settings.VAR_DIR
        # The children's environment: ours, plus the embedded servers' URLs (so that they start
        # nothing themselves) and the state folder.
        env = os.environ.copy()
        embedded_urls = embedded.ensure_embedded()  # manage.py did already: this finds them running
        env.update(embedded_urls)
        if "DATABASE_URL" in embedded_urls:
            self.stdout.write("embedded PostgreSQL ready")
        if "REDIS_URL" in embedded_urls:
            self.stdout.write("embedded Redis ready")
        env.setdefault("PORTAL_VAR_DIR", str(var_dir))
        env.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.base")
        if "PORTAL_DEBUG" not in env and settings.PORTAL_ENVIRONMENT == "demo":
            env["PORTAL_DEBUG"] = "0"

        call_command("migrate", interactive=False, verbosity=0)
        restarted = local_instances_start()
        if restarted:
            self.stdout.write(f"started local clusters: {', '.join(restarted)}")
        demo = None
        if not options["no_demo"]:
            demo = seed_demo()

        python = sys.executable
        bin_dir = os.path.dirname(python)
        port = options["port"]
        bind = options["bind"]
        url = f"http://{'127.0.0.1' if bind in ('0.0.0.0', '') else bind}:{port}/"
        # Notifications (e-mail, webhooks) link to the request page: on one machine, this one.
        env.setdefault("PORTAL_BASE_URL", url.rstrip("/"))
        commands = {
            "web": [os.path.join(bin_dir, "gunicorn"), "portal.wsgi:application", "--bind", f"{bind}:{port}",
                    "--workers", str(settings.WEB_CONCURRENCY),
                    "--threads", str(settings.WEB_THREADS),
                    # Longer than a client's think time between calls: a keep-alive connection the
                    # server drops just as the client reuses it is a "connection reset" error.
                    "--keep-alive", str(settings.WEB_KEEPALIVE),
                    "--timeout", "60", "--access-logfile", "-", "--graceful-timeout", "10"],
            # No --loglevel: Celery logs through settings.LOGGING (PORTAL_LOG_LEVEL), see portal/celery.py.
            "worker": [python, "-m", "celery", "-A", "portal", "worker",
                       "--concurrency", str(settings.WORKER_CONCURRENCY), "--hostname", "worker@%h"],
            "beat": [python, "-m", "celery", "-A", "portal", "beat",
                     "--schedule", str(var_dir / "celerybeat-schedule")],
        }
        # On one machine the background processes yield the CPU to the web ones: an apply may
        # start a few milliseconds later, a page must not wait behind it. 0 = same priority.
        background_nice = settings.WORKER_NICE
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for name, cmd in commands.items():
            nice = background_nice if name in ("worker", "beat") else 0
            proc = subprocess.Popen(cmd, env=env, cwd=settings.BASE_DIR, start_new_session=True,
                                    preexec_fn=(lambda n=nice: os.nice(n)) if nice else None)
            if nice:
                _nice_session(proc.pid, nice)
            self.children.append((name, proc))
        self._wait_healthy(url + "healthz")
        lines = ["", "=" * 64, f"dbportal is running at {url}  (ready in {time.monotonic() - started:.1f} s)"]
        if demo is not None:
            lines.append(f"demo personas ({', '.join(p[0] for p in PERSONAS)}), password: {demo['password']}")
            if demo["instance"] is not None:
                lines.append(f"managed demo instance 'demo' on 127.0.0.1:{demo['instance'].port}, database 'app'")
        lines += ["Ctrl-C stops everything.", "=" * 64, ""]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
        try:
            while not self.stopping:
                for name, proc in self.children:
                    if proc.poll() is not None and not self.stopping:
                        self.stderr.write(f"{name} exited with {proc.returncode}; stopping")
                        self.stopping = True
                time.sleep(0.5)
        finally:
            self._shutdown()

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def _wait_healthy(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)

    def _shutdown(self) -> None:
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _name, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        try:
            for instance in Instance.objects.filter(kind="local").exclude(data_dir=""):
                local_cluster_for(instance).stop()
        except Exception as exc:  # noqa: BLE001 - shutting down: report and go on
            self.stderr.write(f"could not stop local clusters: {exc}")
        connections.close_all()
        if settings.EMBEDDED_REDIS:
            embedded.stop_redis(settings.VAR_DIR)
        if settings.EMBEDDED_DATABASE:
            embedded.stop_database(settings.VAR_DIR)
        self.stdout.write("dbportal stopped")


def _nice_session(pid: int, nice: int) -> None:
    """Lower the CPU share of a child's whole session, where the kernel groups by session.

    With autogroup scheduling (most distributions' default) the CPU is shared between sessions
    first and a process's own niceness only counts inside its session: each child here has a
    session of its own, so os.nice alone would leave the worker an equal share with the web.
    """
    try:
        with open(f"/proc/{pid}/autogroup", "w") as handle:
            handle.write(str(nice))
    except OSError:
        pass  # no autogroup (or not Linux): os.nice in the child is what counts

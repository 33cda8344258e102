"""List the executor logins, or rotate their passwords now (docs/security.md)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from provisioning.executor_logins import rotate
from provisioning.models import ExecutorLogin


class Command(BaseCommand):
    help = ("List the per-team executor logins that run requester SQL; with --rotate, give them new "
            "passwords now (all, or those of --instance / --team).")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rotate", action="store_true", help="set a new generated password on each")
        parser.add_argument("--instance", help="only the logins on this instance (name)")
        parser.add_argument("--team", help="only the logins of this team (name)")

    def handle(self, *args, **options) -> None:
        logins = ExecutorLogin.objects.select_related("instance", "team").order_by("instance__name", "team__name")
        if options["instance"]:
            logins = logins.filter(instance__name=options["instance"])
        if options["team"]:
            logins = logins.filter(team__name=options["team"])
        if (options["instance"] or options["team"]) and not logins.exists():
            raise CommandError("no executor login matches")
        for login in logins:
            if options["rotate"]:
                rotate(login, actor="system")
                login.refresh_from_db()
            synced = login.synced_at.isoformat() if login.synced_at else "pending"
            self.stdout.write(f"{login.instance.name}\t{login.team.name}\t{login.role}\t"
                              f"rotated {login.rotated_at.isoformat()}\tsynced {synced}")

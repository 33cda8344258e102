from django.core.management.base import BaseCommand

from portal.services.demo import seed_demo


class Command(BaseCommand):
    help = "Create the demo personas, teams and the local `demo` instance (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--no-instance", action="store_true", help="skip the local demo cluster")

    def handle(self, *args, **options):
        result = seed_demo(with_instance=not options["no_instance"])
        instance = result["instance"]
        self.stdout.write(f"demo seeded; instance: {instance.name + ' on port ' + str(instance.port) if instance else 'none'}")

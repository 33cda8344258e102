"""Claim the names of requests that were open before reservations existed (#14).

Frozen logic (migrations never import application code): the statuses of
portal.choices.OPEN_STATUSES and the claims of portal.services.names.claims_of as they were when
this was written. The oldest request keeps a name two of them ask for; the later one meets the
plan's assertions at apply instead.
"""

from django.db import migrations

OPEN_STATUSES = ("submitted", "approved", "queued", "running")


def claims(request) -> list[tuple[str, str, str]]:
    payload = request.payload if isinstance(request.payload, dict) else {}
    if request.type == "role" and payload.get("name"):
        return [("role", "", payload["name"])]
    if request.type == "schema" and payload.get("name"):
        found = [("schema", payload.get("database") or "", payload["name"])]
        if payload.get("owner_role") and payload.get("create_owner_role", True):
            found.append(("role", "", payload["owner_role"]))
        return found
    return []


def backfill(apps, schema_editor):
    change_request = apps.get_model("portal", "ChangeRequest")
    reservation = apps.get_model("portal", "NameReservation")
    taken: set[tuple[int, str, str, str]] = set(
        reservation.objects.values_list("instance_id", "kind", "database", "name"))
    rows = []
    for request in change_request.objects.filter(status__in=OPEN_STATUSES, type__in=("role", "schema")).order_by("pk"):
        for kind, database, name in claims(request):
            key = (request.instance_id, kind, database, name)
            if key not in taken and len(name) <= 63:
                taken.add(key)
                rows.append(reservation(instance_id=request.instance_id, kind=kind, database=database, name=name,
                                        request_id=request.pk))
    reservation.objects.bulk_create(rows, ignore_conflicts=True)


class Migration(migrations.Migration):

    dependencies = [
        ("portal", "0005_name_reservation"),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]

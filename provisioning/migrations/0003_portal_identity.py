"""The portal's identity in applied-change markers, stored instead of derived from the connection."""

import hashlib
import secrets

from django.db import migrations, models


def legacy_portal_id(connection) -> str:
    """The id portal releases before 0003 derived from the connection (name, host, port)."""
    db = connection.settings_dict
    options = db.get("OPTIONS") or {}
    seed = "|".join(str(v or "") for v in (db.get("NAME"), db.get("HOST") or options.get("host"),
                                           db.get("PORT") or options.get("port")))
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


def seed_identity(apps, schema_editor):
    # A portal that has requests already wrote markers under the derived id: it keeps that id,
    # so its retries still find them. A new portal gets a random one (two portals whose
    # databases share a name and port, on two machines, must not share an id).
    ChangeRequest = apps.get_model("portal", "ChangeRequest")
    PortalIdentity = apps.get_model("provisioning", "PortalIdentity")
    connection = schema_editor.connection
    value = legacy_portal_id(connection) if ChangeRequest.objects.exists() else secrets.token_hex(8)
    PortalIdentity.objects.using(connection.alias).get_or_create(pk=1, defaults={"value": value})


class Migration(migrations.Migration):

    dependencies = [
        ("portal", "0004_request_filed_by"),
        ("provisioning", "0002_replication_credential"),
    ]

    operations = [
        migrations.CreateModel(
            name="PortalIdentity",
            fields=[
                ("id", models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                ("value", models.CharField(max_length=64)),
            ],
            options={"db_table": "provisioning_portal_identity", "managed": False},
        ),
        migrations.RunSQL(
            sql="CREATE TABLE provisioning_portal_identity (id smallint PRIMARY KEY CHECK (id = 1), "
                "value varchar(64) NOT NULL CHECK (value <> ''))",
            reverse_sql="DROP TABLE provisioning_portal_identity",
        ),
        migrations.RunPython(seed_identity, migrations.RunPython.noop),
    ]

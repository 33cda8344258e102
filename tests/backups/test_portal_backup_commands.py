"""manage.py portal_backup / portal_restore_drill (issue #20): the portal's own database dumped, restored
into a scratch cluster, checked (exact row counts, the audit chain), and a damaged dump caught."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from provisioning.backups.storage import storage

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_portal_database_is_backed_up_and_its_drill_passes_then_a_damaged_dump_fails(people):
    out = StringIO()
    call_command("portal_backup", stdout=out)
    key = out.getvalue().split()[1].rstrip(":")
    assert (storage().path(key) / "001.dump").is_file()
    assert AuditEvent.objects.filter(action="backup.taken", object_type="portal", outcome="ok").exists()

    out = StringIO()
    call_command("portal_restore_drill", "--backup", key, stdout=out)
    text = out.getvalue()
    assert "ok  row_counts" in text and "ok  audit_chain" in text and "passed" in text and "RTO" in text
    assert AuditEvent.objects.filter(action="backup.drill_passed", object_type="portal").exists()

    dump = storage().path(key) / "001.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    out = StringIO()
    with pytest.raises(CommandError, match="FAILED"):
        call_command("portal_restore_drill", "--backup", key, stdout=out)
    assert "FAIL manifest" in out.getvalue() and "checksum mismatch" in out.getvalue()
    event = AuditEvent.objects.get(action="backup.drill_failed", object_type="portal")
    assert event.outcome == "failed" and "manifest" in event.details["reason"]

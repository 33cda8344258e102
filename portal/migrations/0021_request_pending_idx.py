"""Scale (#23): the review queue's order as a partial index over submitted requests (risk rank
descending, then oldest first), so a queue page reads its 20 rows in order instead of sorting every
pending request. Built CONCURRENTLY (so outside a transaction): on a large requests table a plain
CREATE INDEX would block filing and deciding requests for the whole scan (docs/operations.md)."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("portal", "0020_request_search_and_dashboard"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="changerequest",
            index=models.Index(
                models.OrderBy(
                    models.Case(
                        models.When(risk="low", then=models.Value(0)),
                        models.When(risk="medium", then=models.Value(1)),
                        models.When(risk="high", then=models.Value(2)),
                        output_field=models.IntegerField(),
                    ),
                    descending=True,
                ),
                models.F("created_at"),
                models.F("id"),
                condition=models.Q(("status", "submitted")),
                name="request_pending_idx",
            ),
        ),
    ]

"""NameReservation: a role or schema name claimed by an open request on an instance."""

from django.db import models

from portal.choices import NameKind


class NameReservation(models.Model):
    """One name an open request will create. The unique constraint is the guarantee: two requests
    submitted at the same instant cannot both insert the row, whatever their teams (the second
    submit is a 409 naming the holder). Roles are cluster-wide (database ""), schemas per database.
    Rows live from submit until the request ends (portal.services.names)."""

    instance = models.ForeignKey("portal.Instance", on_delete=models.CASCADE, related_name="name_reservations")
    kind = models.CharField(max_length=6, choices=NameKind.choices)
    database = models.CharField(max_length=63, blank=True, default="")
    name = models.CharField(max_length=63)
    request = models.ForeignKey("portal.ChangeRequest", on_delete=models.CASCADE, related_name="name_reservations")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["instance", "kind", "database", "name"],
                                               name="name_reservation_unique")]

    @classmethod
    def release_for(cls, requests) -> None:
        """Give back the names of requests that ended, in the caller's transaction (the transition's).

        Only role and schema requests claim names (portal.services.names.claims_of): others cost no
        query. Called by the services (reject, cancel) and the engine (applied, failed)."""
        ids = [request.pk for request in requests if request.type in ("role", "schema")]
        if ids:
            cls.objects.filter(request_id__in=ids).delete()

    def __str__(self) -> str:
        where = f"{self.database}." if self.database else ""
        return f"{self.kind} {where}{self.name} on {self.instance_id} (request #{self.request_id})"

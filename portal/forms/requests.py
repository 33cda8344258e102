"""New-request forms, one per type: the common fields, then the type's payload fields.

Drop-downs are fed by the instance's inventory (databases, schemas, roles, tables). A value the
inventory does not list is kept as an option, so input is never lost; whether it exists is the
plan validator's call (it answers with an error naming the field).
"""

from __future__ import annotations

import re
from typing import Any

from django import forms

from portal.choices import PRIVILEGES, TABLE_PRIVILEGES, InstanceStatus, RequestType
from portal.forms.base import PortalForm
from portal.models import Instance, InstanceInventory, ManagedRole, ManagedSchema, Team
from portal.selectors.instances import instance_list_for
from provisioning.naming import NAME_RULE, name_problem

BLANK = ("", "— choose —")
# Never offered in the drop-downs: the catalogs and the portal's own bookkeeping schema.
SYSTEM_SCHEMAS = {"information_schema", "dbportal_meta"}


def natural_key(name: str) -> list[Any]:
    """Sort key putting p2 before p10: runs of digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _options(values: list[str], current: Any, *, blank: bool = True, own: list[str] | None = None,
             own_label: str = "") -> list[Any]:
    """Choices in natural order; with `own`, the team's own first in a group of their own (#19)."""
    values = list(values)
    if current and not isinstance(current, list) and current not in values:
        values.append(str(current))
    values = sorted(set(values), key=natural_key)
    head = [BLANK] if blank else []
    mine = [v for v in values if own and v in own]
    if not mine:
        return head + [(v, v) for v in values]
    others = [v for v in values if v not in mine]
    groups: list[Any] = [(own_label, [(v, v) for v in mine])]
    if others:
        groups.append(("Other", [(v, v) for v in others]))
    return head + groups


class RequestForm(PortalForm):
    """Fields every request has. Subclasses add the payload fields and `payload()`."""

    request_type: str = ""
    payload_fields: tuple[str, ...] = ()
    # Fields whose change re-renders the form (their drop-downs depend on it).
    refresh_fields: tuple[str, ...] = ("instance",)

    instance = forms.ModelChoiceField(queryset=Instance.objects.none(), empty_label="— choose an instance —",
                                      help_text="The cluster this request changes.")
    team = forms.ModelChoiceField(queryset=Team.objects.none(), empty_label="— choose a team —",
                                  help_text="The team that will own what is created.")
    justification = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                                    help_text="Why it is needed; reviewers read this first.")
    # "Edit and resubmit" (#19): the failed or rejected request this one is filed again from.
    resubmit_of = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput,
                                     label="Resubmission of")

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["instance"].queryset = instance_list_for(user).exclude(status=InstanceStatus.RETIRED)
        teams = Team.objects.restrict(user, "view").order_by("name")
        self.fields["team"].queryset = teams
        if not self.is_bound and "team" not in self.initial:
            own = list(Team.objects.filter(memberships__user=user).values_list("pk", flat=True)[:2])
            if len(own) == 1:
                self.initial["team"] = own[0]
        if not self.is_bound and not self.initial.get("instance"):
            only = list(self.fields["instance"].queryset.values_list("pk", flat=True)[:2])
            if len(only) == 1:
                self.initial["instance"] = only[0]
        self.inventory = self._inventory()
        self.setup_payload_fields()
        for name in self.refresh_fields:
            self.fields[name].widget.attrs["data-refresh"] = "1"
        self.style_widgets()

    # -- inventory ---------------------------------------------------------------------------
    def value_of(self, name: str) -> Any:
        if self.is_bound:
            field = self.fields.get(name)
            if isinstance(field, forms.MultipleChoiceField):
                return self.data.getlist(name) if hasattr(self.data, "getlist") else self.data.get(name, [])
            return self.data.get(name, "")
        return self.initial.get(name, "")

    def selected_instance(self) -> Instance | None:
        value = self.value_of("instance")
        if isinstance(value, Instance):
            return value
        try:
            return self.fields["instance"].queryset.filter(pk=int(value)).first() if value else None
        except (TypeError, ValueError):
            return None

    def _inventory(self) -> dict:
        instance = self.selected_instance()
        if instance is None:
            return {}
        inventory = InstanceInventory.objects.filter(instance=instance).first()
        snapshot = dict(inventory.snapshot) if inventory else {}
        roles = dict(snapshot.get("roles", {}))
        for role in ManagedRole.objects.filter(instance=instance, dropped_at__isnull=True):
            roles.setdefault(role.name, {"login": role.login})
        snapshot["roles"] = roles
        snapshot["_refreshed_at"] = inventory.refreshed_at if inventory else None
        return snapshot

    @property
    def inventory_refreshed_at(self):
        return self.inventory.get("_refreshed_at")

    def databases(self) -> list[str]:
        return sorted(self.inventory.get("databases", {}))

    def schemas(self, database: str) -> list[str]:
        names = self.inventory.get("databases", {}).get(database, {}).get("schemas", {})
        return sorted(n for n in names if n not in SYSTEM_SCHEMAS and not n.startswith("pg_"))

    def team_schemas(self, database: str) -> list[str]:
        """Schemas the portal created for the chosen team in this database (where its DDL may run)."""
        instance, team = self.selected_instance(), self.value_of("team")
        if instance is None or not team or not str(team).isdigit():
            return []
        return sorted(ManagedSchema.objects.filter(instance=instance, database=database, team_id=int(team))
                      .values_list("name", flat=True))

    def tables(self, database: str, schema: str) -> list[str]:
        schemas = self.inventory.get("databases", {}).get(database, {}).get("schemas", {})
        return sorted(schemas.get(schema, {}).get("tables", []))

    def roles(self, *, login: bool | None = None) -> list[str]:
        roles = self.inventory.get("roles", {})
        return sorted(name for name, attrs in roles.items()
                      if not name.startswith("pg_") and (login is None or bool(attrs.get("login")) == login))

    def team_roles(self) -> list[str]:
        """The chosen team's live roles on the chosen instance (listed first in the pickers)."""
        instance, team = self.selected_instance(), self.value_of("team")
        if instance is None or not team or not str(team).isdigit():
            return []
        return list(ManagedRole.objects.filter(instance=instance, team_id=int(team), dropped_at__isnull=True)
                    .values_list("name", flat=True))

    def team_label(self) -> str:
        team = self.value_of("team")
        name = next((t.name for t in self.fields["team"].queryset if str(t.pk) == str(team)), "") if team else ""
        return f"Team {name}" if name else "Your team"

    def pick(self, name: str, values: list[str], *, required: bool = True, help_text: str = "",
             label: str | None = None, own: list[str] | None = None) -> None:
        """A drop-down of inventory values (the team's own first, natural order, filterable as you
        type), or a text box when the inventory lists none."""
        current = self.value_of(name)
        attrs = {"class": "form-select" if values else "form-control"}
        if values:
            attrs["data-searchable"] = ""
            widget = forms.Select(choices=_options(values, current, own=own, own_label=self.team_label()),
                                  attrs=attrs)
        else:
            widget = forms.TextInput(attrs=attrs)
            note = ("(Choose an instance first to pick from its inventory.)" if self.selected_instance() is None
                    else "(None in the instance's inventory yet: type the name.)")
            help_text = (help_text + " " if help_text else "") + note
        self.fields[name] = forms.CharField(required=required, max_length=63, widget=widget, help_text=help_text,
                                           label=label)

    # -- per type ----------------------------------------------------------------------------
    def setup_payload_fields(self) -> None:
        """Add the payload fields (after the inventory is known)."""

    def payload(self) -> dict:
        raise NotImplementedError

    def submit_options(self) -> dict:
        """What request_submit takes besides the request itself (the DDL form's dry-run override)."""
        return {}

    def common(self) -> dict:
        data = self.cleaned_data
        return {"type": self.request_type, "instance": data["instance"], "team": data["team"],
                "justification": data["justification"]}


def _name_field(*, role: bool = False, help_text: str) -> forms.CharField:
    """A role, schema or replica name judged by the one naming rule (provisioning.naming), in plain
    words, as the plan will judge it: what the form accepts is exactly what the plan accepts."""

    def check(value: str) -> None:
        problem = name_problem(value, role=role)
        if problem:
            raise forms.ValidationError(problem, code="name")

    # strip=False: the rule judges the whole string, as it does for the API, instead of the form
    # quietly changing what was typed.
    return forms.CharField(max_length=63, strip=False, validators=[check], help_text=help_text)


def resubmit_initial(original: Any) -> dict[str, Any]:
    """The form's initial values from a failed or rejected request: what was asked, to edit."""
    payload = dict(original.payload or {})
    initial: dict[str, Any] = {"instance": original.instance_id, "team": original.team_id,
                               "justification": original.justification, "resubmit_of": original.pk}
    form_class = FORMS[original.type]
    for name in form_class.payload_fields:
        if name in payload and name not in ("tables", "expires_at", "valid_until"):  # a past time is no default
            initial[name] = payload[name]
    tables = payload.get("tables")
    if isinstance(tables, list):
        initial["tables_mode"], initial["tables"] = "list", tables
    elif "tables_mode" in form_class.payload_fields:
        initial["tables_mode"] = "all"
    return initial


def _iso(value) -> str | None:
    return value.isoformat() if value else None


class SchemaRequestForm(RequestForm):
    request_type = RequestType.SCHEMA
    payload_fields = ("database", "name", "owner_role")
    refresh_fields = ("instance",)

    def setup_payload_fields(self) -> None:
        self.pick("database", self.databases(), help_text="The database the schema is created in.")
        self.fields["name"] = _name_field(help_text="e.g. payments_reports. " + NAME_RULE[0].upper() + NAME_RULE[1:] + ".")
        self.pick("owner_role", self.roles(login=False), required=False, label="Owner role",
                  help_text="A NOLOGIN role of your team that will own it; empty: the portal creates <name>_owner.")

    def payload(self) -> dict:
        data = self.cleaned_data
        payload = {"database": data["database"], "name": data["name"]}
        if data.get("owner_role"):
            payload["owner_role"] = data["owner_role"]
        return payload


class RoleRequestForm(RequestForm):
    request_type = RequestType.ROLE
    payload_fields = ("name", "login", "member_of", "connection_limit", "valid_until")

    def setup_payload_fields(self) -> None:
        self.fields["name"] = _name_field(role=True, help_text="The role's name, e.g. payments_api. "
                                                           + NAME_RULE[0].upper() + NAME_RULE[1:] + ".")
        self.fields["login"] = forms.BooleanField(required=False, initial=True, label="Can log in (LOGIN)",
                                                  help_text="A password is generated at apply time and shown "
                                                            "to you once.")
        groups = self.roles(login=False)
        current = self.value_of("member_of") or []
        self.fields["member_of"] = forms.MultipleChoiceField(
            required=False, label="Member of",
            choices=_options(list(set(groups) | set(current)), None, blank=False, own=self.team_roles(),
                             own_label=self.team_label()),
            widget=forms.CheckboxSelectMultiple(attrs={"data-searchable": ""}),
            help_text="Group roles it inherits privileges from (IN ROLE).")
        self.fields["connection_limit"] = forms.IntegerField(required=False, min_value=-1, max_value=1000,
                                                             label="Connection limit", help_text="-1 or empty: no limit.")
        self.fields["valid_until"] = forms.DateTimeField(
            required=False, label="Valid until (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
            help_text="The password stops working after this time.")

    def payload(self) -> dict:
        data = self.cleaned_data
        payload: dict[str, Any] = {"name": data["name"], "login": bool(data.get("login")),
                                   "member_of": list(data.get("member_of") or [])}
        if data.get("connection_limit") is not None:
            payload["connection_limit"] = data["connection_limit"]
        if data.get("valid_until"):
            payload["valid_until"] = _iso(data["valid_until"])
        return payload


class GrantRequestForm(RequestForm):
    request_type = RequestType.GRANT
    payload_fields = ("role", "database", "schema", "privileges", "tables_mode", "tables", "default_privileges",
                      "expires_at")
    refresh_fields = ("instance", "database", "schema")

    def setup_payload_fields(self) -> None:
        self.pick("role", self.roles(), help_text="Who receives the privileges.", own=self.team_roles())
        self.pick("database", self.databases())
        database = self.value_of("database")
        self.pick("schema", self.schemas(database) if database else [],
                  own=self.team_schemas(database) if database else [])
        self.fields["privileges"] = forms.MultipleChoiceField(
            choices=[(p, p) for p in PRIVILEGES], widget=forms.CheckboxSelectMultiple,
            help_text="USAGE and CREATE apply to the schema; the others to its tables.")
        self.fields["tables_mode"] = forms.ChoiceField(
            label="Tables", choices=[("all", "All tables in the schema"), ("list", "Only these tables")],
            initial="all", widget=forms.RadioSelect)
        tables = self.tables(database, self.value_of("schema")) if database else []
        current = self.value_of("tables") or []
        self.fields["tables"] = forms.MultipleChoiceField(
            required=False, label="Only these tables",
            choices=[(t, t) for t in sorted(set(tables) | set(current), key=natural_key)],
            widget=forms.CheckboxSelectMultiple(attrs={"data-searchable": ""}),
            help_text="From the inventory of the chosen schema." if tables else "No tables known in this schema.")
        self.fields["default_privileges"] = forms.BooleanField(
            required=False, label="Also future tables (ALTER DEFAULT PRIVILEGES)",
            help_text="Tables created later by the schema owner get the same privileges.")
        if self.request_type == RequestType.GRANT:
            self.fields["expires_at"] = forms.DateTimeField(
                required=False, label="Expires at (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
                help_text="Time-bound access is revoked automatically at this time.")

    def clean(self) -> dict:
        data = super().clean()
        if data.get("tables_mode") == "list" and not data.get("tables"):
            self.add_error("tables", "pick at least one table, or choose all tables")
        return data

    def payload(self) -> dict:
        data = self.cleaned_data
        payload: dict[str, Any] = {
            "role": data["role"], "database": data["database"], "schema": data["schema"],
            "privileges": list(data["privileges"]),
            "tables": "all" if data.get("tables_mode") != "list" else list(data.get("tables") or []),
            "default_privileges": bool(data.get("default_privileges")),
        }
        if payload["tables"] == "all" and not TABLE_PRIVILEGES.intersection(payload["privileges"]):
            # Only USAGE / CREATE ticked: the default "All tables" radio means nothing, and the plan
            # refuses a tables value without table privileges (#19: the form asks what the plan takes).
            del payload["tables"]
        if data.get("expires_at"):
            payload["expires_at"] = _iso(data["expires_at"])
        return payload


class RevokeRequestForm(GrantRequestForm):
    request_type = RequestType.REVOKE
    payload_fields = ("role", "database", "schema", "privileges", "tables_mode", "tables", "default_privileges")

    def setup_payload_fields(self) -> None:
        super().setup_payload_fields()
        # The grant form's words are wrong here: in a revoke the role loses privileges.
        self.fields["role"].help_text = self.fields["role"].help_text.replace(
            "Who receives the privileges.", "The role that loses the privileges; its open sessions on the "
            "instance are ended when the revoke is applied.")
        self.fields["privileges"].help_text = "The privileges taken away. USAGE and CREATE are on the schema; " \
            "the others on its tables."
        self.fields["default_privileges"].label = "Also future tables (ALTER DEFAULT PRIVILEGES … REVOKE)"
        self.fields["default_privileges"].help_text = "Tables created later no longer get these privileges."


class DdlRequestForm(RequestForm):
    request_type = RequestType.DDL
    payload_fields = ("database", "schema", "sql")
    refresh_fields = ("instance", "team", "database")

    def setup_payload_fields(self) -> None:
        self.pick("database", self.databases())
        database = self.value_of("database")
        self.pick("schema", (self.team_schemas(database) or self.schemas(database)) if database else [],
                  help_text="One of your team's schemas; statements run with it first on the search_path.")
        self.fields["sql"] = forms.CharField(
            label="SQL", max_length=100_000, strip=False,
            widget=forms.Textarea(attrs={"rows": 10, "class": "form-control font-monospace", "spellcheck": "false"}),
            help_text="CREATE / ALTER / DROP statements; the review rules check them before a reviewer does.")
        # #19: a plan whose dry run failed is submitted only with a reason (request_submit).
        self.fields["dry_run_override"] = forms.CharField(
            label="Submit despite a failed dry run: why?", required=False, max_length=1000,
            widget=forms.Textarea(attrs={"rows": 2}),
            help_text="Only when the dry run in the preview failed (dev and staging). Reviewers see the failure "
                      "and this reason.")

    def payload(self) -> dict:
        data = self.cleaned_data
        return {"database": data["database"], "schema": data["schema"], "sql": data["sql"]}

    def submit_options(self) -> dict:
        return {"dry_run_override": self.cleaned_data.get("dry_run_override", "")}


REPLICA_EXAMPLE = "demo_replica_1"


class ReplicaRequestForm(RequestForm):
    request_type = RequestType.REPLICA
    payload_fields = ("name",)

    def setup_payload_fields(self) -> None:
        # The plan judges a replica's name by the naming rule of roles and schemas (no hyphens): so
        # does the form, and its example passes that rule (test_replica_example_name_is_valid).
        self.fields["name"] = _name_field(help_text=f"Name of the new replica instance, e.g. {REPLICA_EXAMPLE}. "
                                                    + NAME_RULE[0].upper() + NAME_RULE[1:] + ".")

    def payload(self) -> dict:
        return {"name": self.cleaned_data["name"]}


class RestoreRequestForm(RequestForm):
    """Point-in-time restore (#20): database D of a local instance as it was at T, in a new instance."""

    request_type = RequestType.RESTORE
    payload_fields = ("database", "target_time", "name")
    refresh_fields = ("instance",)

    def setup_payload_fields(self) -> None:
        self.pick("database", self.databases(), help_text="The database to restore.")
        self.fields["target_time"] = forms.CharField(
            label="As it was at", max_length=40,
            help_text="ISO 8601 with its offset, e.g. 2026-12-04T21:30:00+00:00; the newest verified backup "
                      "before it plus the archived WAL up to it are restored.")
        self.fields["name"] = _name_field(help_text="Name of the new local instance, e.g. demo_asof. "
                                                    + NAME_RULE[0].upper() + NAME_RULE[1:] + ".")

    def payload(self) -> dict:
        data = self.cleaned_data
        return {"database": data["database"], "target_time": data["target_time"], "name": data["name"]}


FORMS: dict[str, type[RequestForm]] = {
    RequestType.SCHEMA: SchemaRequestForm,
    RequestType.ROLE: RoleRequestForm,
    RequestType.GRANT: GrantRequestForm,
    RequestType.REVOKE: RevokeRequestForm,
    RequestType.DDL: DdlRequestForm,
    RequestType.REPLICA: ReplicaRequestForm,
    RequestType.RESTORE: RestoreRequestForm,
}

# The cards of the type picker: (type, title, what it does, icon).
TYPE_CARDS = [
    (RequestType.SCHEMA, "Schema", "A new schema for your team, owned by a NOLOGIN team role.", "folder-plus"),
    (RequestType.ROLE, "Role", "A login role for a service or a group role; password generated once.", "person-badge"),
    (RequestType.GRANT, "Grant access", "Privileges on a schema or its tables, optionally time-bound.", "unlock"),
    (RequestType.REVOKE, "Revoke access", "Take privileges away; live sessions of the role are ended.", "lock"),
    (RequestType.DDL, "Schema change (DDL)", "CREATE / ALTER / DROP statements, checked by review rules.",
     "code-square"),
    (RequestType.REPLICA, "Read replica", "A streaming read replica of a local instance.", "layers"),
    (RequestType.RESTORE, "Point-in-time restore", "A database of a local instance as it was at a time, in a "
     "new instance (docs/backups.md).", "clock-history"),
]

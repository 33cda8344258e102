"""Data dictionary reads (issue #21): the latest snapshot of a database as a user may see it, its
history, a search across instances, exports (Markdown, CSV, JSON) and index hints.

Who sees what: the structure (schemas, tables, columns, constraints, indexes, comments, owners,
the owning team) is visible to every signed-in user, as the inventory's table names already are
in the request pickers. The figures (sizes, row estimates, scan counts) and the index hints are
shown for the user's own teams' schemas only; reviewers, auditors and admins see every figure.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from django.shortcuts import get_object_or_404

from portal.models import DictionarySnapshot, ManagedSchema
from portal.personas import sees_everything
from provisioning.dictionary import FIGURES

MAX_SEARCH_RESULTS = 200
# Index hints: a table this big read mostly by sequential scans deserves a look at its indexes.
SEQ_SCAN_HINT_BYTES = 8 * 1024 * 1024


def latest_snapshots(instance) -> list[DictionarySnapshot]:
    return list(DictionarySnapshot.objects.filter(instance=instance).order_by("database", "-taken_at")
                .distinct("database").defer("body", "changes"))


def _owners(instance, database: str) -> dict[str, str]:
    return dict(ManagedSchema.objects.filter(instance=instance, database=database).values_list("name", "team__name"))


def _own_schemas(user, instance, database: str) -> set[str]:
    return set(ManagedSchema.objects.filter(instance=instance, database=database, team__memberships__user=user)
               .values_list("name", flat=True))


def _strip_figures(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (None if k in FIGURES else _strip_figures(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_figures(v) for v in value]
    return value


def dictionary_for(user, instance, database: str) -> dict[str, Any]:
    """The latest dictionary of a database (404 when there is none), figures scoped per user."""
    snapshot = get_object_or_404(DictionarySnapshot.objects.filter(instance=instance, database=database)
                                 .order_by("-taken_at")[:1])
    owners = _owners(instance, database)
    everything = sees_everything(user)
    own = set() if everything else _own_schemas(user, instance, database)
    schemas = []
    for name, schema in sorted(snapshot.body.get("schemas", {}).items()):
        figures_visible = everything or name in own
        tables = []
        for table_name, table in sorted(schema["tables"].items()):
            entry = {"name": table_name, **table}
            tables.append(entry if figures_visible else _strip_figures(entry))
        schemas.append({"name": name, "owner": schema["owner"], "comment": schema["comment"],
                        "team": owners.get(name), "figures": figures_visible, "tables": tables})
    return {"instance": instance.name, "database": database, "taken_at": snapshot.taken_at,
            "checked_at": snapshot.checked_at, "schemas": schemas}


def dictionary_history(instance, database: str, *, limit: int = 50) -> list[dict]:
    rows = (DictionarySnapshot.objects.filter(instance=instance, database=database).order_by("-taken_at")
            .values("taken_at", "changes")[:limit])
    return [{"taken_at": row["taken_at"], "changes": row["changes"]} for row in rows]


def dictionary_search(user, query: str, *, instances) -> list[dict]:
    """Schemas, tables and columns whose name or comment holds `query` (case-insensitive), in the
    latest snapshot of every database of `instances`."""
    needle = query.casefold()
    results: list[dict] = []
    snapshots = (DictionarySnapshot.objects.filter(instance__in=instances).select_related("instance")
                 .order_by("instance_id", "database", "-taken_at").distinct("instance_id", "database"))
    owners: dict[tuple[int, str, str], str] = {
        (i, d, n): t for i, d, n, t in ManagedSchema.objects.filter(instance__in=instances)
        .values_list("instance_id", "database", "name", "team__name")}

    def hit(*texts: str | None) -> bool:
        return any(text and needle in text.casefold() for text in texts)

    for snapshot in snapshots:
        for schema_name, schema in snapshot.body.get("schemas", {}).items():
            base = {"instance": snapshot.instance.name, "database": snapshot.database, "schema": schema_name,
                    "team": owners.get((snapshot.instance_id, snapshot.database, schema_name))}
            if hit(schema_name, schema.get("comment")):
                results.append({**base, "kind": "schema", "table": None, "column": None, "comment": schema.get("comment")})
            for table_name, table in schema["tables"].items():
                if hit(table_name, table.get("comment")):
                    results.append({**base, "kind": table["kind"], "table": table_name, "column": None,
                                    "comment": table.get("comment")})
                for column in table["columns"]:
                    if hit(column["name"], column.get("comment")):
                        results.append({**base, "kind": "column", "table": table_name, "column": column["name"],
                                        "comment": column.get("comment")})
                if len(results) >= MAX_SEARCH_RESULTS:
                    return results[:MAX_SEARCH_RESULTS]
    return results


# --- exports ----------------------------------------------------------------------------------

CSV_COLUMNS = ["instance", "database", "schema", "team", "table", "kind", "column", "type", "nullable", "default",
               "comment", "table_comment", "owner", "rows_estimate", "total_bytes"]


def _md(text: Any) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    return "" if text is None else str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _csv_safe(value: Any) -> Any:
    """A cell a spreadsheet will not run as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_csv(view: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for schema in view["schemas"]:
        for table in schema["tables"]:
            for column in table["columns"]:
                writer.writerow([_csv_safe(v) for v in (
                    view["instance"], view["database"], schema["name"], schema["team"], table["name"], table["kind"],
                    column["name"], column["type"], column["nullable"], column["default"], column["comment"],
                    table["comment"], table["owner"], table.get("rows_estimate"), table.get("total_bytes"))])
    return out.getvalue()


def export_markdown(view: dict) -> str:
    lines = [f"# Data dictionary: {_md(view['instance'])} / {_md(view['database'])}", "",
             f"Read from the catalog at {view['checked_at'].isoformat()}.", ""]
    for schema in view["schemas"]:
        lines += [f"## Schema `{_md(schema['name'])}`", "",
                  f"Owner: {_md(schema['owner'])}; team: {_md(schema['team'] or 'none (not managed by the portal)')}."]
        if schema["comment"]:
            lines.append(_md(schema["comment"]))
        lines.append("")
        for table in schema["tables"]:
            lines += [f"### {_md(table['kind']).capitalize()} `{_md(schema['name'])}.{_md(table['name'])}`", ""]
            if table["comment"]:
                lines += [_md(table["comment"]), ""]
            figures = [f"owner {_md(table['owner'])}"]
            if table.get("rows_estimate") is not None:
                figures.append(f"about {table['rows_estimate']} rows")
            if table.get("total_bytes") is not None:
                figures.append(f"{table['total_bytes']} bytes")
            lines += ["; ".join(figures) + ".", "", "| column | type | null | default | comment |",
                      "| --- | --- | --- | --- | --- |"]
            for c in table["columns"]:
                lines.append(f"| {_md(c['name'])} | {_md(c['type'])} | {'yes' if c['nullable'] else 'no'} | "
                             f"{_md(c['default'])} | {_md(c['comment'])} |")
            lines.append("")
            if table["constraints"]:
                lines += ["Constraints:", ""] + [f"- `{_md(k['name'])}` {_md(k['type'])}: `{_md(k['definition'])}`"
                                                 for k in table["constraints"]] + [""]
            if table["indexes"]:
                lines += ["Indexes:", ""] + [f"- `{_md(i['definition'])}`" for i in table["indexes"]] + [""]
    return "\n".join(lines) + "\n"


def export_json(view: dict) -> str:
    return json.dumps(view, default=str, indent=2)


EXPORTS = {"json": ("application/json", "json", export_json), "csv": ("text/csv; charset=utf-8", "csv", export_csv),
           "md": ("text/markdown; charset=utf-8", "md", export_markdown)}


# --- index hints ------------------------------------------------------------------------------

def index_hints(view: dict) -> list[dict]:
    """Unused indexes (no scan since the statistics reset; not a primary key nor unique: those
    enforce something) and big tables read mostly by sequential scans, in the schemas whose
    figures the view shows."""
    hints = []
    for schema in view["schemas"]:
        if not schema["figures"]:
            continue
        for table in schema["tables"]:
            for index in table["indexes"]:
                if index.get("scans") == 0 and not index["unique"] and not index["primary"]:
                    hints.append({"kind": "unused_index", "schema": schema["name"], "table": table["name"],
                                  "index": index["name"], "bytes": index.get("bytes"),
                                  "hint": "never used since the statistics were reset: a candidate to drop"})
            seq, idx = table.get("seq_scan"), table.get("idx_scan")
            if (seq is not None and (table.get("total_bytes") or 0) >= SEQ_SCAN_HINT_BYTES
                    and seq > (idx or 0)):
                hints.append({"kind": "sequential_scans", "schema": schema["name"], "table": table["name"],
                              "index": None, "bytes": table.get("total_bytes"),
                              "hint": f"{seq} sequential scans against {idx or 0} index scans: a missing index?"})
    return hints

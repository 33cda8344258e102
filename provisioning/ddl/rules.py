"""Review rules for DDL requests: pure functions over parsed statements and table facts.

Each rule has an id, a severity and a message that points at the statement (its index and an
excerpt). `error` findings refuse the request at submit (a 400); `high` and `warning` feed the
risk through `ddl_risk`. Facts about existing tables (row estimates, sizes, column types) are an
input (see provisioning/ddl/facts.py), so every rule is testable without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

from pglast import ast, enums

from portal.choices import Risk
from provisioning.ddl.parse import Statement
from provisioning.naming import NAME_RULE, name_problem

AT = enums.AlterTableType
ObjectType = enums.ObjectType
ConstrType = enums.ConstrType

ERROR, HIGH, WARNING, INFO = "error", "high", "warning", "info"

# A table is "large" for index builds from this many rows or this many 8 kB pages (100 MB).
LARGE_TABLE_ROWS = 100_000
LARGE_TABLE_PAGES = 12_800

# The portal's one naming rule (provisioning/plans/checks.py), applied to every new name.
NAME_RULE_TEXT = NAME_RULE


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    title: str
    description: str


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule("ddl.drop_table", HIGH, "DROP TABLE",
             "Dropping a table loses its data; it cannot be undone by the portal."),
        Rule("ddl.drop_column", HIGH, "DROP COLUMN", "Dropping a column loses its data."),
        Rule("ddl.truncate", HIGH, "TRUNCATE", "TRUNCATE removes every row of the table."),
        Rule("ddl.column_type_rewrite", HIGH, "ALTER COLUMN TYPE that rewrites the table",
             "Changing a column's type rewrites the table under an ACCESS EXCLUSIVE lock, unless the "
             "new type is binary-compatible (varchar widened, varchar to text, numeric widened)."),
        Rule("ddl.add_column_not_null_without_default", ERROR, "ADD COLUMN NOT NULL without a default",
             "On a table that has rows this fails: give the column a DEFAULT, or add it nullable, "
             "backfill, then SET NOT NULL."),
        Rule("ddl.index_without_concurrently", WARNING, "CREATE INDEX without CONCURRENTLY on a large table",
             "A plain CREATE INDEX blocks writes to the table while it builds."),
        Rule("ddl.table_without_primary_key", WARNING, "New table without a primary key",
             "Tables without a primary key cannot be replicated logically and are hard to update "
             "row by row."),
        Rule("ddl.naming", ERROR, "Naming rule", f"New names use {NAME_RULE_TEXT}."),
    )
}


@dataclass(frozen=True)
class ColumnFacts:
    type: str  # pg_type.typname, e.g. varchar, int4, numeric
    typmod: int = -1


@dataclass(frozen=True)
class TableFacts:
    """What the cluster says about an existing table of the request's schema."""

    rows: float = 0.0  # pg_class.reltuples (-1: never analysed)
    pages: int = 0  # pg_class.relpages
    has_rows: bool = False  # at least one row exists (checked directly when reltuples is not > 0)
    columns: dict[str, ColumnFacts] = field(default_factory=dict)

    @property
    def large(self) -> bool:
        return self.rows >= LARGE_TABLE_ROWS or self.pages >= LARGE_TABLE_PAGES


Facts = dict[str, TableFacts]  # unqualified table name -> facts


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    message: str
    statement_index: int
    excerpt: str

    def as_dict(self) -> dict:
        return asdict(self)


class _Context:
    """What the rules know while walking the statements in order."""

    def __init__(self, statements: list[Statement], facts: Facts) -> None:
        self.statements = statements
        self.facts = facts
        self.created: set[str] = set()  # tables created earlier in this request (empty, no facts)
        self.findings: list[Finding] = []
        self.enabled: set[str] = set()

    def add(self, rule_id: str, statement: Statement, message: str) -> None:
        if rule_id not in self.enabled:
            return
        rule = RULES[rule_id]
        self.findings.append(Finding(rule_id, rule.severity, f"{statement.label()}: {message}",
                                     statement.index, statement.excerpt))

    def existing(self, relname: str) -> TableFacts | None:
        """Facts of a table that exists before the plan (None for new or unknown tables)."""
        if relname in self.created:
            return None
        return self.facts.get(relname)


def _enum(value, enum_type):
    if isinstance(value, enum_type):
        return value
    return enum_type[value] if isinstance(value, str) else enum_type(value)


def _contypes(constraints: Iterable | None) -> set:
    return {_enum(c.contype, ConstrType) for c in constraints or () if isinstance(c, ast.Constraint)}


def _type_parts(type_name: ast.TypeName) -> tuple[str, list[int]]:
    names = [n.sval for n in type_name.names or () if isinstance(n, ast.String)]
    mods = []
    for mod in type_name.typmods or ():
        if isinstance(mod, ast.A_Const) and isinstance(mod.val, ast.Integer):
            mods.append(mod.val.ival)
        else:
            mods.append(-999)  # not a plain number: treat as unknown
    return (names[-1] if names else ""), mods


# Spellings the parser leaves unqualified that mean the same pg_type.
_TYPE_ALIASES = {"character varying": "varchar", "character": "bpchar", "char": "bpchar",
                 "integer": "int4", "int": "int4", "smallint": "int2", "bigint": "int8",
                 "decimal": "numeric", "timestamp with time zone": "timestamptz"}


def _rewrites(old: ColumnFacts | None, new: ast.TypeName, using: bool) -> bool:
    """Does ALTER COLUMN TYPE rewrite the table? Unknown -> True (the cautious answer)."""
    if old is None or using:
        return True
    new_name, new_mods = _type_parts(new)
    new_name = _TYPE_ALIASES.get(new_name, new_name)
    if new_name == old.type and not new_mods and old.typmod == -1:
        return False
    if old.type == "varchar":
        old_len = old.typmod - 4 if old.typmod >= 0 else None
        if new_name == "text":
            return False
        if new_name == "varchar":
            if not new_mods:
                return False
            return old_len is None or new_mods[0] < old_len
        return True
    if old.type == "text":
        return not (new_name == "varchar" and not new_mods)
    if old.type == "numeric" and new_name == "numeric":
        if not new_mods:
            return False
        if old.typmod < 0:
            return True
        old_precision, old_scale = (old.typmod - 4) >> 16, (old.typmod - 4) & 0xFFFF
        precision, scale = new_mods[0], (new_mods[1] if len(new_mods) > 1 else 0)
        return not (scale == old_scale and precision >= old_precision)
    if new_name == old.type and old.typmod >= 0 and new_mods and old.type in ("bpchar",):
        return new_mods[0] != old.typmod - 4
    return True


def _check_name(ctx: _Context, statement: Statement, name: str | None, what: str) -> None:
    if not name:
        return
    problem = name_problem(name)
    if problem:
        ctx.add("ddl.naming", statement, f"{what} name {name!r} breaks the naming rule: {problem}")


def _column_not_null_without_default(column: ast.ColumnDef) -> bool:
    types = _contypes(column.constraints)
    not_null = column.is_not_null or bool(types & {ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY})
    filled = bool(types & {ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED})
    return not_null and not filled and column.raw_default is None


def _table_names_with_pk_added(statements: list[Statement]) -> set[str]:
    """Tables that an ALTER TABLE ... ADD PRIMARY KEY in the request gives a key."""
    tables = set()
    for statement in statements:
        node = statement.node
        if isinstance(node, ast.AlterTableStmt) and node.relation is not None:
            for cmd in node.cmds or ():
                constraint = getattr(cmd, "def_", None)
                if isinstance(constraint, ast.Constraint) and _enum(constraint.contype, ConstrType) == \
                        ConstrType.CONSTR_PRIMARY:
                    tables.add(node.relation.relname)
    return tables


def _columns_and_constraints(node: ast.CreateStmt) -> Iterator[ast.Node]:
    yield from node.tableElts or ()
    yield from node.constraints or ()


def _create_table(ctx: _Context, statement: Statement, node: ast.CreateStmt, keyed: set[str]) -> None:
    relname = node.relation.relname
    _check_name(ctx, statement, relname, "table")
    has_pk = False
    for element in _columns_and_constraints(node):
        if isinstance(element, ast.ColumnDef):
            _check_name(ctx, statement, element.colname, "column")
            for constraint in element.constraints or ():
                _check_name(ctx, statement, constraint.conname, "constraint")
            has_pk |= ConstrType.CONSTR_PRIMARY in _contypes(element.constraints)
        elif isinstance(element, ast.Constraint):
            _check_name(ctx, statement, element.conname, "constraint")
            has_pk |= _enum(element.contype, ConstrType) == ConstrType.CONSTR_PRIMARY
    # Partitions inherit the parent's key; typed and LIKE tables are judged by what they copy.
    copied = node.partbound is not None or node.ofTypename is not None or any(
        isinstance(e, ast.TableLikeClause) for e in node.tableElts or ())
    if not has_pk and not copied and relname not in keyed:
        ctx.add("ddl.table_without_primary_key", statement,
                f"table {relname} has no primary key; add one (e.g. id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY)")
    ctx.created.add(relname)


def _alter_table(ctx: _Context, statement: Statement, node: ast.AlterTableStmt) -> None:
    relname = node.relation.relname
    objtype = _enum(node.objtype, ObjectType)
    facts = ctx.existing(relname)
    for cmd in node.cmds or ():
        if not isinstance(cmd, ast.AlterTableCmd):
            continue
        subtype = _enum(cmd.subtype, AT)
        if subtype == AT.AT_DropColumn and objtype == ObjectType.OBJECT_TABLE:
            ctx.add("ddl.drop_column", statement, f"drops column {cmd.name} of {relname} and its data")
        elif subtype == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            column = cmd.def_
            _check_name(ctx, statement, column.colname, "column")
            for constraint in column.constraints or ():
                _check_name(ctx, statement, constraint.conname, "constraint")
            if _column_not_null_without_default(column) and facts is not None and facts.has_rows:
                ctx.add("ddl.add_column_not_null_without_default", statement,
                        f"column {column.colname} is NOT NULL without a DEFAULT but {relname} has rows; "
                        "add a DEFAULT, or add it nullable, backfill, then SET NOT NULL")
        elif subtype == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            _check_name(ctx, statement, cmd.def_.conname, "constraint")
        elif subtype == AT.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
            if relname in ctx.created:
                continue  # a table created by this request is empty: nothing to rewrite
            old = facts.columns.get(cmd.name) if facts is not None else None
            type_name = cmd.def_.typeName
            if type_name is not None and _rewrites(old, type_name, cmd.def_.raw_default is not None):
                known = "" if old is not None else " (current type unknown: assuming a rewrite)"
                ctx.add("ddl.column_type_rewrite", statement,
                        f"changing the type of {relname}.{cmd.name} rewrites the table under an "
                        f"ACCESS EXCLUSIVE lock{known}")


def _index(ctx: _Context, statement: Statement, node: ast.IndexStmt) -> None:
    _check_name(ctx, statement, node.idxname, "index")
    facts = ctx.existing(node.relation.relname)
    if not node.concurrent and facts is not None and facts.large:
        ctx.add("ddl.index_without_concurrently", statement,
                f"{node.relation.relname} is large (~{int(max(facts.rows, 0))} rows, {facts.pages} pages): "
                "a plain CREATE INDEX blocks writes while it builds; use CREATE INDEX CONCURRENTLY "
                f"{node.idxname or '<name>'} ON ... (it runs as its own step)")


def _drop(ctx: _Context, statement: Statement, node: ast.DropStmt) -> None:
    if _enum(node.removeType, ObjectType) != ObjectType.OBJECT_TABLE:
        return
    for obj in node.objects or ():
        parts = [p.sval for p in obj if isinstance(p, ast.String)] if isinstance(obj, tuple | list) else []
        name = parts[-1] if parts else "?"
        ctx.add("ddl.drop_table", statement, f"drops table {name} and all its data")
        ctx.created.discard(name)


def _truncate(ctx: _Context, statement: Statement, node: ast.TruncateStmt) -> None:
    for relation in node.relations or ():
        if isinstance(relation, ast.RangeVar):
            ctx.add("ddl.truncate", statement, f"removes every row of {relation.relname}")


def _other_names(ctx: _Context, statement: Statement, node: ast.Node, keyed: set[str]) -> None:
    if isinstance(node, ast.ViewStmt):
        _check_name(ctx, statement, node.view.relname, "view")
    elif isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
        relname = node.into.rel.relname
        is_table = _enum(node.objtype, ObjectType) == ObjectType.OBJECT_TABLE
        _check_name(ctx, statement, relname, "table" if is_table else "materialized view")
        for column in node.into.colNames or ():
            _check_name(ctx, statement, getattr(column, "sval", None), "column")
        if is_table:
            if relname not in keyed:
                ctx.add("ddl.table_without_primary_key", statement,
                        f"table {relname} (CREATE TABLE AS) has no primary key; add one with ALTER TABLE")
            ctx.created.add(relname)
    elif isinstance(node, ast.CreateSeqStmt):
        _check_name(ctx, statement, node.sequence.relname, "sequence")
    elif isinstance(node, ast.CreateEnumStmt):
        _check_name(ctx, statement, (node.typeName or [ast.String(sval="")])[-1].sval, "type")
    elif isinstance(node, ast.CompositeTypeStmt):
        _check_name(ctx, statement, node.typevar.relname, "type")
        for column in node.coldeflist or ():
            if isinstance(column, ast.ColumnDef):
                _check_name(ctx, statement, column.colname, "attribute")
    elif isinstance(node, ast.CreateDomainStmt):
        _check_name(ctx, statement, (node.domainname or [ast.String(sval="")])[-1].sval, "domain")
    elif isinstance(node, ast.RenameStmt):
        _check_name(ctx, statement, node.newname, "new")


Handler = Callable[..., None]


def evaluate(statements: list[Statement], *, facts: Facts | None = None,
             enabled: Iterable[str] | None = None) -> list[Finding]:
    """Findings of every enabled rule (all rules when `enabled` is None), in statement order."""
    ctx = _Context(statements, facts or {})
    ctx.enabled = set(RULES) if enabled is None else set(enabled) & set(RULES)
    keyed = _table_names_with_pk_added(statements)
    for statement in statements:
        node = statement.node
        if isinstance(node, ast.CreateStmt):
            _create_table(ctx, statement, node, keyed)
        elif isinstance(node, ast.AlterTableStmt) and node.relation is not None:
            _alter_table(ctx, statement, node)
        elif isinstance(node, ast.IndexStmt) and node.relation is not None:
            _index(ctx, statement, node)
        elif isinstance(node, ast.DropStmt):
            _drop(ctx, statement, node)
        elif isinstance(node, ast.TruncateStmt):
            _truncate(ctx, statement, node)
        else:
            _other_names(ctx, statement, node, keyed)
    return ctx.findings


_RISK_OF = {ERROR: Risk.HIGH, HIGH: Risk.HIGH, WARNING: Risk.MEDIUM, INFO: Risk.LOW}


def ddl_risk(findings: Iterable[Finding | dict]) -> tuple[str, list[str]]:
    """(risk, reasons) of a DDL plan from its findings: high > warning (medium) > low."""
    risk = Risk.LOW
    reasons: list[str] = []
    order = {Risk.LOW: 0, Risk.MEDIUM: 1, Risk.HIGH: 2}
    for finding in findings:
        data = finding.as_dict() if isinstance(finding, Finding) else dict(finding)
        level = _RISK_OF.get(data.get("severity", INFO), Risk.LOW)
        if level != Risk.LOW:
            reasons.append(f"{data.get('rule')}: {data.get('message')}")
        if order[level] > order[risk]:
            risk = level
    return str(risk.value), reasons


def errors_of(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]

"""Scope of a DDL request: an allow-list of statement kinds, and every name kept in one schema.

Two checks, both over pglast's parse tree:
1. The statement's node type (and, for ALTER TABLE / DROP / COMMENT / RENAME, its sub-kind)
   must be on the allow-list below. Everything else is refused with a rule id that says why
   (roles, privileges, the server, sessions, transactions, functions ...).
2. Every name anywhere in the tree (tables and views read by a query, FK targets, types,
   collations, operators, operator classes, sequences named in strings, functions called) must
   be unqualified — it then resolves in the request's schema, which the plan puts on
   search_path — or qualified with the request's schema. Built-in types, functions, collations
   and operators may also be qualified with pg_catalog; relations may not.

See docs/ddl.md for the reasoning behind each refusal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pglast import ast, enums

from portal.errors import InvalidPayload
from provisioning.ddl import functions as ddl_functions
from provisioning.ddl.parse import FIELD, Statement, walk

ObjectType = enums.ObjectType
AT = enums.AlterTableType

SYSTEM_SCHEMAS = {"pg_catalog", "information_schema", "pg_toast"}

# Statement node types that are refused, by rule id. Anything not listed here and not in
# ALLOWED is refused as scope.statement_not_allowed: the allow-list is what decides.
REFUSED_KINDS: dict[str, tuple[str, str]] = {}


def _refuse(rule: str, message: str, *kinds: str) -> None:
    for kind in kinds:
        REFUSED_KINDS[kind] = (rule, message)


_refuse("scope.roles", "roles are managed through role requests",
        "CreateRoleStmt", "AlterRoleStmt", "AlterRoleSetStmt", "DropRoleStmt", "GrantRoleStmt",
        "ReassignOwnedStmt", "DropOwnedStmt", "CreateUserMappingStmt", "AlterUserMappingStmt",
        "DropUserMappingStmt")
_refuse("scope.privileges", "privileges are managed through grant and revoke requests",
        "GrantStmt", "AlterDefaultPrivilegesStmt", "CreatePolicyStmt", "AlterPolicyStmt", "SecLabelStmt")
_refuse("scope.ownership", "objects stay owned by the schema's owner role", "AlterOwnerStmt")
_refuse("scope.server", "server-wide settings and objects are not changed through DDL requests",
        "AlterSystemStmt", "LoadStmt", "CheckPointStmt", "CreateTableSpaceStmt", "DropTableSpaceStmt",
        "AlterTableSpaceOptionsStmt", "AlterTableMoveAllStmt", "CreateEventTrigStmt", "AlterEventTrigStmt",
        "CreateFdwStmt", "AlterFdwStmt", "CreateForeignServerStmt", "AlterForeignServerStmt",
        "CreateForeignTableStmt", "ImportForeignSchemaStmt", "CreatePublicationStmt", "AlterPublicationStmt",
        "CreateSubscriptionStmt", "AlterSubscriptionStmt", "DropSubscriptionStmt", "CreatePLangStmt",
        "CreateAmStmt", "AlterCollationStmt", "ReplicaIdentityStmt", "AlterStatsStmt", "CreateStatsStmt",
        "AlterTSConfigurationStmt", "AlterTSDictionaryStmt", "CreateConversionStmt", "CreateCastStmt",
        "CreateTransformStmt", "CreateOpClassStmt", "CreateOpFamilyStmt", "AlterOpFamilyStmt",
        "AlterOperatorStmt", "AlterTypeStmt")
_refuse("scope.copy", "COPY reads or writes files and data; it is not a schema change", "CopyStmt")
_refuse("scope.do_block", "anonymous code blocks (DO) run arbitrary code", "DoStmt")
_refuse("scope.session", "the plan sets search_path and the role itself; session settings are not allowed",
        "VariableSetStmt", "VariableShowStmt", "DiscardStmt", "ConstraintsSetStmt")
_refuse("scope.extension", "extensions are installed by platform admins", "CreateExtensionStmt",
        "AlterExtensionStmt", "AlterExtensionContentsStmt")
_refuse("scope.database", "databases are not created, changed or dropped through DDL requests",
        "CreatedbStmt", "DropdbStmt", "AlterDatabaseStmt", "AlterDatabaseSetStmt",
        "AlterDatabaseRefreshCollStmt")
_refuse("scope.schema", "schemas are managed through schema requests; objects stay in their schema",
        "CreateSchemaStmt", "AlterObjectSchemaStmt")
_refuse("scope.transaction", "the portal runs the plan in its own transaction", "TransactionStmt", "LockStmt")
_refuse("scope.maintenance", "VACUUM, CLUSTER and REINDEX are maintenance, not schema changes",
        "VacuumStmt", "ClusterStmt", "ReindexStmt")
_refuse("scope.notify", "LISTEN / NOTIFY are not schema changes", "ListenStmt", "UnlistenStmt", "NotifyStmt")
_refuse("scope.dml", "queries and data changes are not schema changes; the application does those",
        "SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "ExplainStmt", "PrepareStmt",
        "ExecuteStmt", "DeallocateStmt", "DeclareCursorStmt", "FetchStmt", "ClosePortalStmt", "CallStmt")
_refuse("scope.function",
        "functions, procedures, triggers and rules run code in the plan's session; they are not allowed",
        "CreateFunctionStmt", "AlterFunctionStmt", "CreateTrigStmt", "RuleStmt", "DefineStmt",
        "CreateRangeStmt")

ALLOWED_KINDS = {
    "CreateStmt", "AlterTableStmt", "IndexStmt", "ViewStmt", "CreateTableAsStmt", "RefreshMatViewStmt",
    "CreateSeqStmt", "AlterSeqStmt", "CreateEnumStmt", "AlterEnumStmt", "CompositeTypeStmt",
    "CreateDomainStmt", "AlterDomainStmt", "CommentStmt", "DropStmt", "TruncateStmt", "RenameStmt",
}

RELATION_KINDS = {ObjectType.OBJECT_TABLE, ObjectType.OBJECT_INDEX, ObjectType.OBJECT_VIEW,
                  ObjectType.OBJECT_MATVIEW, ObjectType.OBJECT_SEQUENCE}
TYPE_KINDS = {ObjectType.OBJECT_TYPE, ObjectType.OBJECT_DOMAIN}
DROP_KINDS = RELATION_KINDS | TYPE_KINDS
ALTER_TABLE_KINDS = RELATION_KINDS
# Object kind -> how many trailing name parts are not the schema (a column is table.column).
COMMENT_KINDS = {**{kind: 1 for kind in RELATION_KINDS}, ObjectType.OBJECT_COLUMN: 2,
                 ObjectType.OBJECT_TABCONSTRAINT: 2}
RENAME_KINDS = RELATION_KINDS | TYPE_KINDS | {ObjectType.OBJECT_COLUMN, ObjectType.OBJECT_TABCONSTRAINT,
                                               ObjectType.OBJECT_ATTRIBUTE}

ALTER_TABLE_ALLOWED = {
    AT.AT_AddColumn, AT.AT_ColumnDefault, AT.AT_DropNotNull, AT.AT_SetNotNull, AT.AT_SetExpression,
    AT.AT_DropExpression, AT.AT_SetStatistics, AT.AT_SetOptions, AT.AT_ResetOptions, AT.AT_SetStorage,
    AT.AT_SetCompression, AT.AT_DropColumn, AT.AT_AddConstraint, AT.AT_AlterConstraint,
    AT.AT_ValidateConstraint, AT.AT_AddIndexConstraint, AT.AT_DropConstraint, AT.AT_AlterColumnType,
    AT.AT_SetRelOptions, AT.AT_ResetRelOptions, AT.AT_AttachPartition, AT.AT_DetachPartition,
    AT.AT_AddIdentity, AT.AT_SetIdentity, AT.AT_DropIdentity, AT.AT_ReplicaIdentity, AT.AT_SetLogged,
    AT.AT_SetUnLogged, AT.AT_ClusterOn, AT.AT_DropCluster, AT.AT_AddInherit, AT.AT_DropInherit,
}
ALTER_TABLE_REFUSED = {
    AT.AT_ChangeOwner: ("scope.ownership", "objects stay owned by the schema's owner role"),
    AT.AT_SetTableSpace: ("scope.tablespace", "tablespaces are chosen by platform admins"),
    AT.AT_EnableRowSecurity: ("scope.privileges", "row security is a privilege matter"),
    AT.AT_DisableRowSecurity: ("scope.privileges", "row security is a privilege matter"),
    AT.AT_ForceRowSecurity: ("scope.privileges", "row security is a privilege matter"),
    AT.AT_NoForceRowSecurity: ("scope.privileges", "row security is a privilege matter"),
}
for _sub in (AT.AT_EnableTrig, AT.AT_EnableAlwaysTrig, AT.AT_EnableReplicaTrig, AT.AT_DisableTrig,
             AT.AT_EnableTrigAll, AT.AT_DisableTrigAll, AT.AT_EnableTrigUser, AT.AT_DisableTrigUser,
             AT.AT_EnableRule, AT.AT_EnableAlwaysRule, AT.AT_EnableReplicaRule, AT.AT_DisableRule):
    ALTER_TABLE_REFUSED[_sub] = ("scope.function", "triggers and rules are not managed through DDL requests")

INDEX_METHODS = {"btree", "hash", "gist", "gin", "spgist", "brin"}
TABLE_METHODS = {None, "heap"}

# nextval('s.q') and 's.q'::regclass name a relation inside a string.
SEQUENCE_FUNCTIONS = {"nextval", "currval", "setval"}
NAME_CASTS = {"regclass", "regtype", "regproc", "regprocedure", "regoper", "regoperator", "regcollation",
              "regconfig", "regdictionary", "regnamespace", "regrole"}


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str
    statement_index: int

    def text(self, statement: Statement) -> str:
        return f"{statement.label()}: [{self.rule}] {self.message}"


def _enum(value, enum_type):
    """pglast gives enums as members; tolerate their int or name forms too."""
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        return enum_type[value]
    return enum_type(value)


def _names(items: Iterable) -> list[str] | None:
    """A qualified name given as a list of String nodes, or None when it is not one."""
    parts = []
    for item in items or ():
        if not isinstance(item, ast.String):
            return None
        parts.append(item.sval)
    return parts


class _Checker:
    def __init__(self, statement: Statement, schema: str) -> None:
        self.statement = statement
        self.schema = schema
        self.violations: list[Violation] = []

    def refuse(self, rule: str, message: str) -> None:
        violation = Violation(rule, message, self.statement.index)
        if violation not in self.violations:
            self.violations.append(violation)

    # -- names ---------------------------------------------------------------------------
    def schema_name(self, schema: str | None, what: str, *, builtin_ok: bool) -> None:
        if schema is None or schema == self.schema:
            return
        if builtin_ok and schema == "pg_catalog":
            return
        if schema in SYSTEM_SCHEMAS or schema.startswith("pg_"):
            self.refuse("scope.system_catalog", f"{what} is in the system schema {schema}")
        else:
            self.refuse("scope.other_schema", f"{what} is in schema {schema}, not in {self.schema}")

    def qualified(self, parts: list[str] | None, tail: int, what: str, *, builtin_ok: bool = False) -> None:
        """A dotted name whose last `tail` parts are the object (and its sub-object)."""
        if parts is None:
            self.refuse("scope.statement_not_allowed", f"{what} is not a plain name")
            return
        if len(parts) > tail + 1:
            self.refuse("scope.cross_database", f"{'.'.join(parts)} names another database")
            return
        if len(parts) == tail + 1:
            self.schema_name(parts[0], f"{what} {'.'.join(parts)}", builtin_ok=builtin_ok)
        elif tail == 1 and parts and parts[-1].startswith("pg_") and not builtin_ok:
            self.refuse("scope.system_catalog",
                        f"{what} {parts[-1]}: unqualified names starting with pg_ resolve to the system catalog")

    def range_var(self, node: ast.RangeVar) -> None:
        if node.catalogname:
            self.refuse("scope.cross_database", f"{node.catalogname}.{node.schemaname}.{node.relname} "
                                                "names another database")
        if node.relpersistence == "t":
            self.refuse("scope.temporary", f"temporary relation {node.relname}: temporary objects "
                                           "live in a session schema and vanish with the plan")
        if node.schemaname:
            self.schema_name(node.schemaname, f"relation {node.schemaname}.{node.relname}", builtin_ok=False)
        elif node.relname and node.relname.startswith("pg_"):
            self.refuse("scope.system_catalog",
                        f"relation {node.relname}: unqualified names starting with pg_ resolve to the system catalog")

    def string_name(self, value: str, what: str) -> None:
        """A name inside a string literal ('s.seq'::regclass, nextval('s.seq'))."""
        parts = [part.strip().strip('"') for part in value.split(".")]
        if len(parts) > 2:
            self.refuse("scope.cross_database", f"{what} '{value}' names another database")
        elif len(parts) == 2:
            self.schema_name(parts[0], f"{what} '{value}'", builtin_ok=False)
        elif parts[0].lower().startswith("pg_"):
            self.refuse("scope.system_catalog", f"{what} '{value}' resolves to the system catalog")

    def function_call(self, node: ast.FuncCall) -> None:
        """Only built-ins on the reviewed allow-list (provisioning/ddl/functions.py), by name."""
        parts = _names(node.funcname)
        where = f" (position {node.location + 1})" if isinstance(node.location, int) and node.location >= 0 else ""
        if not parts:
            self.refuse("scope.function_call", f"a function call that is not a plain name{where}")
            return
        name = parts[-1]
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "pg_catalog"):
            self.refuse("scope.function_call", f"function {'.'.join(parts)}(){where}: only built-in functions may "
                                               f"be called, unqualified or as pg_catalog.{name}()")
            return
        if not ddl_functions.allowed(name):
            self.refuse("scope.function_call", f"function {name}(){where} is not on the allow-list of functions "
                                               f"(version {ddl_functions.ALLOWLIST_VERSION}, docs/ddl.md)")
            return
        if name.lower() in SEQUENCE_FUNCTIONS:
            first = node.args[0] if node.args else None
            if isinstance(first, ast.TypeCast) and _names(first.typeName.names or ()) in (["regclass"],
                                                                                          ["pg_catalog", "regclass"]):
                first = first.arg
            if isinstance(first, ast.A_Const) and isinstance(first.val, ast.String):
                self.string_name(first.val.sval, "sequence")
            else:
                # A sequence computed at run time could be any sequence the session can reach.
                self.refuse("scope.function_call", f"{name}(){where} takes the sequence's name as a literal")

    def names_everywhere(self) -> None:
        for node in walk(self.statement.node):
            if isinstance(node, ast.RangeVar):
                self.range_var(node)
            elif isinstance(node, ast.TypeName):
                if node.pct_type:
                    self.refuse("scope.statement_not_allowed", "%TYPE references are not allowed")
                self.qualified(_names(node.names), 1, "type", builtin_ok=True)
                last = (_names(node.names) or [""])[-1]
                if last == "regrole":
                    self.refuse("scope.roles", "role references (regrole) are not allowed")
            elif isinstance(node, ast.FuncCall):
                self.function_call(node)
            elif isinstance(node, ast.TypeCast):
                type_parts = _names(node.typeName.names) if node.typeName else None
                arg = node.arg
                if (type_parts and type_parts[-1] in NAME_CASTS and isinstance(arg, ast.A_Const)
                        and isinstance(arg.val, ast.String)):
                    self.string_name(arg.val.sval, type_parts[-1])
            elif isinstance(node, ast.CollateClause):
                self.qualified(_names(node.collname), 1, "collation", builtin_ok=True)
            elif isinstance(node, ast.A_Expr):
                if node.name and len(node.name) > 1:
                    self.qualified(_names(node.name), 1, "operator", builtin_ok=True)
            elif isinstance(node, ast.IndexElem):
                if node.opclass:
                    self.qualified(_names(node.opclass), 1, "operator class", builtin_ok=True)
                if node.collation:
                    self.qualified(_names(node.collation), 1, "collation", builtin_ok=True)
            elif isinstance(node, ast.DefElem):
                if node.defname == "owned_by" and isinstance(node.arg, tuple | list):
                    parts = _names(node.arg)
                    if parts != ["none"]:
                        self.qualified(parts, 2, "OWNED BY column")
            elif isinstance(node, ast.Constraint):
                if node.indexspace:
                    self.refuse("scope.tablespace", "tablespaces are chosen by platform admins")
            elif isinstance(node, ast.IntoClause):
                if node.tableSpaceName:
                    self.refuse("scope.tablespace", "tablespaces are chosen by platform admins")
                if node.accessMethod not in TABLE_METHODS:
                    self.refuse("scope.statement_not_allowed", f"table access method {node.accessMethod}")
            elif isinstance(node, ast.ObjectWithArgs):
                self.refuse("scope.function", "functions and operators are not referenced by DDL requests")

    # -- statement kinds -----------------------------------------------------------------
    def cascade(self, behavior) -> None:
        if behavior is not None and _enum(behavior, enums.DropBehavior) == enums.DropBehavior.DROP_CASCADE:
            self.refuse("scope.cascade", "CASCADE can drop or truncate objects in other schemas; "
                                         "name the dependent objects explicitly")

    def kind(self) -> bool:
        """Check the statement kind; False when the kind itself is refused (names are then moot)."""
        node = self.statement.node
        kind = type(node).__name__
        if kind in REFUSED_KINDS:
            self.refuse(*REFUSED_KINDS[kind])
            return False
        if kind not in ALLOWED_KINDS:
            self.refuse("scope.statement_not_allowed", f"{kind} is not on the DDL allow-list")
            return False
        getattr(self, f"check_{kind}", lambda n: None)(node)
        return True

    def check_CreateStmt(self, node: ast.CreateStmt) -> None:
        if node.tablespacename:
            self.refuse("scope.tablespace", "tablespaces are chosen by platform admins")
        if node.accessMethod not in TABLE_METHODS:
            self.refuse("scope.statement_not_allowed", f"table access method {node.accessMethod}")

    def check_IndexStmt(self, node: ast.IndexStmt) -> None:
        if node.tableSpace:
            self.refuse("scope.tablespace", "tablespaces are chosen by platform admins")
        if node.accessMethod and node.accessMethod not in INDEX_METHODS:
            self.refuse("scope.statement_not_allowed", f"index method {node.accessMethod}")
        if node.concurrent and not node.idxname:
            self.refuse("scope.index_name", "CREATE INDEX CONCURRENTLY needs an index name: it runs as its own "
                                            "idempotent step (IF NOT EXISTS)")

    def check_AlterTableStmt(self, node: ast.AlterTableStmt) -> None:
        objtype = _enum(node.objtype, ObjectType)
        if objtype not in ALTER_TABLE_KINDS:
            self.refuse("scope.statement_not_allowed", f"ALTER {objtype.name.removeprefix('OBJECT_')}")
            return
        for cmd in node.cmds or ():
            if not isinstance(cmd, ast.AlterTableCmd):
                self.refuse("scope.statement_not_allowed", f"{type(cmd).__name__} in ALTER")
                continue
            subtype = _enum(cmd.subtype, AT)
            if subtype == AT.AT_DetachPartition and getattr(cmd.def_, "concurrent", False):
                self.refuse("scope.subcommand_not_allowed", "DETACH PARTITION CONCURRENTLY cannot run in the "
                                                            "plan's transaction; detach without CONCURRENTLY")
            if subtype in ALTER_TABLE_REFUSED:
                self.refuse(*ALTER_TABLE_REFUSED[subtype])
            elif subtype not in ALTER_TABLE_ALLOWED:
                self.refuse("scope.subcommand_not_allowed", f"ALTER TABLE {subtype.name.removeprefix('AT_')}")
            self.cascade(cmd.behavior)

    def check_DropStmt(self, node: ast.DropStmt) -> None:
        kind = _enum(node.removeType, ObjectType)
        self.cascade(node.behavior)
        if kind == ObjectType.OBJECT_SCHEMA:
            self.refuse("scope.schema", "schemas are dropped through schema requests")
            return
        if kind in (ObjectType.OBJECT_FUNCTION, ObjectType.OBJECT_PROCEDURE, ObjectType.OBJECT_ROUTINE,
                    ObjectType.OBJECT_TRIGGER, ObjectType.OBJECT_RULE, ObjectType.OBJECT_AGGREGATE):
            self.refuse("scope.function", "functions, procedures, triggers and rules are not managed here")
            return
        if kind == ObjectType.OBJECT_EXTENSION:
            self.refuse("scope.extension", "extensions are managed by platform admins")
            return
        if kind not in DROP_KINDS:
            self.refuse("scope.statement_not_allowed", f"DROP {kind.name.removeprefix('OBJECT_')}")
            return
        for obj in node.objects or ():
            if isinstance(obj, ast.TypeName):
                continue  # checked with every TypeName
            self.qualified(_names(obj) if isinstance(obj, tuple | list) else None, 1, "object")

    def check_TruncateStmt(self, node: ast.TruncateStmt) -> None:
        self.cascade(node.behavior)

    def check_CommentStmt(self, node: ast.CommentStmt) -> None:
        kind = _enum(node.objtype, ObjectType)
        if kind in TYPE_KINDS:
            return  # the object is a TypeName, checked with every TypeName
        if kind not in COMMENT_KINDS:
            self.refuse("scope.statement_not_allowed", f"COMMENT ON {kind.name.removeprefix('OBJECT_')}")
            return
        obj = node.object
        self.qualified(_names(obj) if isinstance(obj, tuple | list) else None, COMMENT_KINDS[kind], "object")

    def check_RenameStmt(self, node: ast.RenameStmt) -> None:
        kind = _enum(node.renameType, ObjectType)
        if kind == ObjectType.OBJECT_SCHEMA:
            self.refuse("scope.schema", "schemas are renamed through schema requests")
            return
        if kind in (ObjectType.OBJECT_ROLE,):
            self.refuse("scope.roles", "roles are managed through role requests")
            return
        if kind == ObjectType.OBJECT_DATABASE:
            self.refuse("scope.database", "databases are not renamed through DDL requests")
            return
        if kind not in RENAME_KINDS:
            self.refuse("scope.statement_not_allowed", f"RENAME of {kind.name.removeprefix('OBJECT_')}")
            return
        if node.relation is None and isinstance(node.object, tuple | list):
            self.qualified(_names(node.object), 1, "object")

    def check_CreateEnumStmt(self, node: ast.CreateEnumStmt) -> None:
        self.qualified(_names(node.typeName), 1, "type")

    def check_AlterEnumStmt(self, node: ast.AlterEnumStmt) -> None:
        self.qualified(_names(node.typeName), 1, "type")

    def check_CreateDomainStmt(self, node: ast.CreateDomainStmt) -> None:
        self.qualified(_names(node.domainname), 1, "domain")

    def check_AlterDomainStmt(self, node: ast.AlterDomainStmt) -> None:
        self.qualified(_names(node.typeName), 1, "domain")
        self.cascade(node.behavior)
        if node.subtype not in ("T", "N", "O", "C", "X", "V"):
            self.refuse("scope.subcommand_not_allowed", f"ALTER DOMAIN subcommand {node.subtype!r}")


def is_concurrent_index(statement: Statement) -> bool:
    """CREATE / DROP INDEX CONCURRENTLY: cannot run in a transaction, so each is its own step after it."""
    node = statement.node
    if isinstance(node, ast.IndexStmt):
        return bool(node.concurrent)
    return (isinstance(node, ast.DropStmt) and bool(node.concurrent)
            and _enum(node.removeType, ObjectType) == ObjectType.OBJECT_INDEX)


def violations(statement: Statement, schema: str) -> list[Violation]:
    checker = _Checker(statement, schema)
    if checker.kind():
        checker.names_everywhere()
    return checker.violations


def check(statements: list[Statement], *, schema: str) -> None:
    """Raise InvalidPayload (payload.sql) listing every scope violation of every statement."""
    messages: list[str] = []
    seen_concurrent = False
    for statement in statements:
        try:
            found = violations(statement, schema)
        except (RecursionError, ValueError, KeyError, AttributeError, TypeError) as exc:
            found = [Violation("scope.statement_not_allowed",
                               f"this statement could not be checked ({type(exc).__name__})", statement.index)]
        concurrent = is_concurrent_index(statement)
        if seen_concurrent and not concurrent:
            found.append(Violation("scope.concurrent_index_last",
                                   "CREATE / DROP INDEX CONCURRENTLY run after the plan's transaction commits: put "
                                   "such statements at the end of the request", statement.index))
        seen_concurrent |= concurrent
        messages.extend(v.text(statement) for v in found)
    if messages:
        detail = messages[0] if len(messages) == 1 else f"{messages[0]} (and {len(messages) - 1} more)"
        raise InvalidPayload(detail, errors={FIELD: messages})


def referenced_tables(statements: Iterable[Statement]) -> set[str]:
    """Unqualified names of the relations the statements touch (scope checks ran already): the
    tables whose facts the review rules need (read by provisioning/ddl/facts.py)."""
    names = set()
    for statement in statements:
        for node in walk(statement.node):
            if isinstance(node, ast.RangeVar) and node.relname:
                names.add(node.relname)
    return names

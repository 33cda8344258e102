"""Every environment variable the portal reads is in README's configuration table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("portal", "provisioning", "audit")
# Read by the tools the portal runs on, not by the portal's own settings.
NOT_OURS = {"DJANGO_SETTINGS_MODULE"}


def _name_read(node: ast.AST) -> str | None:
    """The variable of os.environ.get("X"), os.environ["X"], os.getenv("X") or env_bool("X")."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        dotted = ast.unparse(func)
        if dotted in ("os.environ.get", "os.getenv", "env_bool", "environ.get"):
            return node.args[0].value
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
        if isinstance(node.slice, ast.Constant):
            return node.slice.value
    return None


def variables_read() -> dict[str, str]:
    """Variable -> the first file reading it, over the portal's packages (migrations aside)."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                name = _name_read(node)
                if isinstance(name, str) and name not in NOT_OURS:
                    found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def documented() -> set[str]:
    """The backticked names in the first column of README's "## Configuration" table."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_every_variable_the_portal_reads_is_documented_in_the_readme():
    read = variables_read()
    # the scan itself sees the settings module's reads, env_bool's included
    assert {"DATABASE_URL", "PORTAL_FERNET_KEYS", "PORTAL_TRUST_PROXY", "WORKER_NICE"} <= read.keys()
    missing = {name: where for name, where in read.items() if name not in documented()}
    assert not missing, f"read but not in README's configuration table: {missing}"


def test_the_readme_documents_no_variable_the_portal_ignores():
    stale = documented() - variables_read().keys()
    assert not stale, f"in README's configuration table but read nowhere: {sorted(stale)}"

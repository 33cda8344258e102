"""Every environment variable the portal reads is read in portal/conf.py and is in README's configuration table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from portal.conf import Config

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "portal" / "conf.py"
PACKAGES = ("portal", "provisioning", "audit")
# Read by the tools the portal runs on, not by the portal's own settings.
NOT_OURS = {"DJANGO_SETTINGS_MODULE"}
# portal.conf.Environment's typed readers: env.integer("PORTAL_LOGIN_FAILURES", 5) and the like.
READERS = {"text", "flag", "integer", "number", "items", "path", "url"}


def _conf_read(node: ast.AST) -> str | None:
    """The variable of a typed read in portal/conf.py: env.<reader>("X", ...)."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in READERS
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return node.args[0].value
    return None


def _direct_read(node: ast.AST) -> str | None:
    """The variable of os.environ.get("X"), os.environ["X"], os.getenv("X") or environ.get("X")."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        if ast.unparse(node.func) in ("os.environ.get", "os.getenv", "environ.get", "env_bool"):
            return node.args[0].value
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
        if isinstance(node.slice, ast.Constant):
            return node.slice.value
    return None


def _sources() -> list[Path]:
    """The portal's own code (migrations aside) and its entry point, manage.py."""
    paths = [ROOT / "manage.py"]
    for package in PACKAGES:
        paths += [path for path in sorted((ROOT / package).rglob("*.py")) if "migrations" not in path.parts]
    return paths


def conf_variables() -> set[str]:
    return {name for node in ast.walk(ast.parse(CONF.read_text())) if isinstance(name := _conf_read(node), str)}


def direct_reads() -> dict[str, str]:
    """Variable -> the first file outside portal/conf.py reading it by name (there should be none)."""
    found: dict[str, str] = {}
    for path in _sources():
        if path == CONF:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = _direct_read(node)
            if isinstance(name, str) and name not in NOT_OURS:
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def variables_read() -> dict[str, str]:
    """Variable -> where it is read: portal/conf.py, or (a bug the test below names) elsewhere."""
    return {**dict.fromkeys(conf_variables(), "portal/conf.py"), **direct_reads()}


def documented() -> set[str]:
    """The backticked names in the first column of README's "## Configuration" table."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


class _Recording(dict):
    """An environment that notes every variable looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)


def test_the_scan_finds_typed_reads_and_direct_reads():
    # given a typed read as conf.py writes it, and a direct read as nothing else may
    typed = ast.parse('env.integer("PORTAL_EXAMPLE", 5)').body[0].value
    direct = ast.parse('os.environ.get("PORTAL_EXAMPLE", "5")').body[0].value
    # then the scan sees both
    assert _conf_read(typed) == "PORTAL_EXAMPLE"
    assert _direct_read(direct) == "PORTAL_EXAMPLE"


def test_only_portal_conf_reads_the_environment():
    # Everything else reads django.conf.settings (or a portal.conf.Config, outside Django).
    assert direct_reads() == {}


def test_conf_reads_exactly_the_variables_the_scan_sees():
    # given an environment that records what it is asked / when the configuration is read from it
    environ = _Recording()
    Config.from_env(environ)
    # then the AST scan of conf.py and the reads at run time agree (no name built at run time)
    assert environ.asked == conf_variables()


def test_every_variable_the_portal_reads_is_documented_in_the_readme():
    read = variables_read()
    # the scan itself sees conf.py's reads, the run command's and the flags' included
    assert {"DATABASE_URL", "PORTAL_FERNET_KEYS", "PORTAL_TRUST_PROXY", "WORKER_NICE"} <= read.keys()
    missing = {name: where for name, where in read.items() if name not in documented()}
    assert not missing, f"read but not in README's configuration table: {missing}"


def test_the_readme_documents_no_variable_the_portal_ignores():
    stale = documented() - variables_read().keys()
    assert not stale, f"in README's configuration table but read nowhere: {sorted(stale)}"

#!/usr/bin/env python
"""Django's command-line utility for dbportal.

Before any command, it makes sure of the embedded defaults, explicitly (importing settings
starts nothing): the keys PORTAL_SECRET_KEY / PORTAL_FERNET_KEYS do not give are generated
once into the state folder, and the embedded PostgreSQL and Redis start when DATABASE_URL /
REDIS_URL are unset, so `manage.py migrate`, `shell`, `seed_demo` … work on a fresh clone as
`make run` does. With both URLs and both keys set (a deployment), it starts and writes nothing.
"""

import os
import sys


def _settings_option(argv: list[str]) -> None:
    """Apply --settings / --pythonpath now, as Django would later: the servers to start depend on them."""
    from django.core.management.base import CommandParser, handle_default_options

    parser = CommandParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--settings")
    parser.add_argument("--pythonpath")
    options, _ = parser.parse_known_args(argv[2:])
    handle_default_options(options)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.base")
    _settings_option(sys.argv)
    from django.core.management import execute_from_command_line

    from portal import embedded

    embedded.ensure_keys()  # before settings load: they read the key files
    embedded.ensure_embedded()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

"""WhiteNoise for the test suite: the static files are looked up once per process, not per Client.

WhiteNoise lists every file its finders know when its middleware is built. gunicorn builds the
middleware once per process; Django's test Client builds the whole chain for every new client,
and the suite makes thousands (api_for, web_for, the permission matrix), each paying ~50 ms for
the same listing. This subclass lists once and gives every later instance the same table; what
it serves, and with which headers, is WhiteNoise's own.
"""

from __future__ import annotations

from whitenoise.middleware import WhiteNoiseMiddleware as _WhiteNoiseMiddleware


class WhiteNoiseMiddleware(_WhiteNoiseMiddleware):
    _listed: dict | None = None

    def add_files_from_finders(self) -> None:
        cls = WhiteNoiseMiddleware
        if cls._listed is None:
            super().add_files_from_finders()
            cls._listed = dict(self.files)
        else:
            self.files.update(cls._listed)

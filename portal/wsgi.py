"""The WSGI application (gunicorn portal.wsgi:application).

On the embedded defaults (no DATABASE_URL / REDIS_URL, no keys in the environment) it makes sure
of them first, explicitly, as manage.py does: importing settings starts nothing.
"""

import os

from django.core.wsgi import get_wsgi_application

from portal import embedded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.base")
embedded.ensure_keys()  # before settings load: they read the key files
embedded.ensure_embedded()
application = get_wsgi_application()

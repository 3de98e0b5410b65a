"""The ASGI entry point mpmd mounts: `ASGIApp / django_asgi.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_asgi.settings")

application = get_asgi_application()

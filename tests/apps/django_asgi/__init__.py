"""A minimal Django project served through Django's ASGI handler (issue 15's acceptance test).

`django_asgi.asgi:application` is the ASGI app; the sqlite database lives in the folder named
by MPMD_DJANGO_DATA (a test's temp dir), made ready once with `django_asgi.prepare.migrate`.
"""

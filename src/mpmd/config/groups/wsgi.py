"""WSGI applications: mod_wsgi compatible directives, plus mpmd's own (marked extension)."""

from __future__ import annotations

from mpmd.config.declaration import FLAG, ITERATE2, SV, TAKE1, TAKE2, Directive, S
from mpmd.config.validators import v_flag, v_string, v_wsgi_app, v_wsgi_script_alias

GROUP = "wsgi"
TITLE = "WSGI applications"

DIRECTIVES: tuple[Directive, ...] = (
    Directive(
        name="WSGIScriptAlias",
        group=GROUP,
        contexts=SV,
        syntax=ITERATE2,
        usage="URL-path file [option=value ...]",
        default=None,
        doc="Map a URL to a WSGI script file that defines `application` (mod_wsgi compatible)",
        validate=v_wsgi_script_alias,
        repeatable=True,
    ),
    Directive(
        name="WSGIApp",
        group=GROUP,
        contexts=SV,
        syntax=TAKE2,
        usage="URL-path module:callable",
        default=None,
        doc="mpmd extension: mount an importable WSGI callable at a URL-path",
        validate=v_wsgi_app,
        repeatable=True,
        extension=True,
    ),
    Directive(
        name="WSGIPythonPath",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="dir[:dir...]",
        default=None,
        doc="Additional directories to search for Python modules",
        validate=v_string,
    ),
    Directive(
        name="WSGIPreload",
        group=GROUP,
        contexts=S,
        syntax=FLAG,
        usage="On|Off",
        default=False,
        doc=(
            "mpmd extension: import the applications in the parent before forking (children share "
            "the pages; the app must be fork-safe)"
        ),
        validate=v_flag,
        extension=True,
    ),
)

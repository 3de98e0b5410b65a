"""User and Group (mod_unixd, reference 3.4): names and `#id`s resolved as Apache does.

Apache resolves both when it reads the configuration, so `-t` already refuses an unknown
name (AH00543, AH00544) or a User that is root; the child that drops its privileges uses
the ids resolved here. Reads the system's account databases (pwd, grp), nothing else.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Sequence

from mpmd.config.syntax import ConfigError, Node

# unixd_set_user's refusal, as Apache words it (built without -DBIG_SECURITY_HOLE)
ROOT_USER = (
    "Error:\tmpmd has not been designed to serve pages while\n"
    "\trunning as root.  There are known race conditions that\n"
    "\twill allow any local user to read any file on the system.\n"
    "\tIt is strongly suggested that you instead modify the User\n"
    "\tdirective in your configuration file to list a non-root\n"
    "\tuser."
)


def user_id(text: str) -> int:
    """`name` or `#uid` → uid; KeyError (AH00543's text) for an unknown name, ValueError
    for root."""
    if text.startswith("#"):
        uid = _number(text, "AH00543: mpmd: bad user name")
    else:
        try:
            uid = pwd.getpwnam(text).pw_uid
        except KeyError:
            raise KeyError(f"AH00543: mpmd: bad user name {text}") from None
    if uid == 0:
        raise ValueError(ROOT_USER)
    return uid


def group_id(text: str) -> int:
    """`name` or `#gid` → gid; KeyError (AH00544's text) for an unknown name."""
    if text.startswith("#"):
        return _number(text, "AH00544: mpmd: bad group name")
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise KeyError(f"AH00544: mpmd: bad group name {text}") from None


def user_name(uid: int) -> str:
    """The name initgroups() needs; KeyError with AH02155's text when there is none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise KeyError(
            f"AH02155: getpwuid: couldn't determine user name from uid {uid}, "
            "you probably need to modify the User directive"
        ) from None


def _number(text: str, refusal: str) -> int:
    try:
        return int(text[1:])
    except ValueError:
        raise KeyError(f"{refusal} {text}") from None


def check(users: Sequence[tuple[Node, str]] | None, groups: Sequence[tuple[Node, str]] | None):
    """The last User and Group of the main server resolve, or FILE:LINE: Apache's refusal."""
    for entries, resolve in ((users, user_id), (groups, group_id)):
        if entries:
            node, value = entries[-1]
            try:
                resolve(value)
            except (KeyError, ValueError) as error:
                raise ConfigError(node.file, node.line, error.args[0]) from None


def owner_ids(entries: Sequence[tuple[Node, str]] | None) -> tuple[int, int]:
    """ListenUnixOwner `user[:group]` (names or `#id`s, root allowed) → (uid, gid), -1 for
    the part not given; FILE:LINE: AH00543/AH00544's refusal for an unknown name."""
    if not entries:
        return -1, -1
    node, value = entries[-1]
    user, _, group = value.partition(":")
    try:
        uid = _any_user_id(user) if user else -1
        gid = group_id(group) if group else -1
    except KeyError as error:
        raise ConfigError(node.file, node.line, error.args[0]) from None
    return uid, gid


def _any_user_id(text: str) -> int:
    try:
        return user_id(text)
    except ValueError:  # root: refused for User, a valid owner for a socket
        return 0

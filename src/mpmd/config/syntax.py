"""Apache's configuration language → a tree of nodes that remember FILE:LINE.

This module owns tokenising, line continuation, comments, `${VAR}` expansion, Define/UnDefine,
reading the files an Include/IncludeOptional names (config/includes.py expands the pattern)
and the conditional sections (<IfModule>, <IfDefine>, <IfVersion>, <IfFile>, <IfDirective>,
<IfSection>), which are resolved while reading, as Apache does. It knows nothing about what a
directive means: that is config/directives.py and build.py.

The one idea: Apache executes a few directives *while reading* (EXEC_ON_READ: Define, UnDefine,
Include*, ServerRoot, LoadModule and the <If...> conditionals); everything else is only
recorded. So the reader carries a little state (variables, ServerRoot, loaded modules) and
emits plain nodes; the conditionals vanish, their true branches inlined in place.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from mpmd.config.includes import IncludeError, check_include_depth, included_files


class ConfigError(Exception):
    """A configuration mistake, printed as `FILE:LINE: message`."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Node:
    """A directive (children is None) or a section such as <VirtualHost> (children a tuple)."""

    name: str  # as written, without angle brackets: "MaxRequestWorkers", "VirtualHost"
    args: tuple[str, ...]  # unquoted, unescaped, variables expanded
    file: str
    line: int
    children: tuple[Node, ...] | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class ParseResult:
    """Everything the reader learned: the tree plus the read-time state build.py needs."""

    nodes: tuple[Node, ...]
    server_root: str
    defines: dict[str, str]
    modules: tuple[str, ...]
    warnings: tuple[str, ...]


# Modules compiled into Debian's apache2 binary (`apache2 -l`): always present for <IfModule>.
STATIC_MODULES: tuple[tuple[str, str], ...] = (
    ("core_module", "core.c"),
    ("so_module", "mod_so.c"),
    ("watchdog_module", "mod_watchdog.c"),
    ("http_module", "http_core.c"),
    ("log_config_module", "mod_log_config.c"),
    ("logio_module", "mod_logio.c"),
    ("version_module", "mod_version.c"),
    ("unixd_module", "mod_unixd.c"),
)

# Section names as Apache spells them; used for <IfSection> and for canonical error messages.
# fmt: off
REAL_SECTIONS: tuple[str, ...] = (
    "VirtualHost", "Directory", "DirectoryMatch", "Location", "LocationMatch", "Files",
    "FilesMatch", "Proxy", "ProxyMatch", "If", "ElseIf", "Else", "Limit", "LimitExcept",
    "RequireAll", "RequireAny", "RequireNone", "Macro",
)
CONDITIONAL_SECTIONS: tuple[str, ...] = (
    "IfModule", "IfDefine", "IfVersion", "IfFile", "IfDirective", "IfSection",
)
# fmt: on
_CANONICAL_SECTION = {name.lower(): name for name in REAL_SECTIONS + CONDITIONAL_SECTIONS}

# apr_isspace: the whitespace Apache trims and splits on (not Unicode spaces).
_SPACE = " \t\n\r\v\f"
_VERSION = re.compile(r"\d+(?:\.\d+){0,2}")
_VERSION_FORMAT_ERROR = (
    "Version appears to be invalid. It must have the format major[.minor[.patch]] "
    "where major, minor and patch are numbers."
)
# Apache's "takes N arguments" texts for the directives executed while reading.
_USAGE = {
    "define": "Define takes 1-2 arguments, Define a variable, optionally to a value.  "
    "Same as passing -D to the command line.",
    "undefine": "UnDefine takes one argument, Undefine the existence of a variable. Undo a Define.",
    "include": "Include takes one argument, Name(s) of the config file(s) to be included; "
    "fails if the wildcard does not match at least one file",
    "includeoptional": "IncludeOptional takes one argument, Name or pattern of the config "
    "file(s) to be included; ignored if the file does not exist or the pattern does not "
    "match any files",
    "serverroot": "ServerRoot takes one argument, Common directory of server-related files "
    "(logs, confs, etc.)",
    "loadmodule": "LoadModule takes two arguments, a module name and the name of a shared "
    "object file to load it from",
}


class _Unclosed(Exception):
    """An unterminated quote found by the tokenizer; the caller adds FILE:LINE."""


def next_word(text: str, pos: int = 0, *, strict: bool = True) -> tuple[str, int]:
    """One token as `ap_getword_conf` reads it; returns (word, position after it).

    Whitespace separates tokens; a token starting with a quote runs to the matching quote,
    inside which `\\<quote>` and `\\\\` are unescaped. `\\\\` is unescaped outside quotes
    too; every other backslash stays literal. An empty string means the line is exhausted.
    """
    end = len(text)
    while pos < end and text[pos] in _SPACE:
        pos += 1
    if pos >= end:
        return "", end
    quote = text[pos]
    out: list[str] = []
    if quote == '"' or quote == "'":
        i = pos + 1
        while i < end and text[i] != quote:
            ch = text[i]
            if ch == "\\" and i + 1 < end and text[i + 1] in (quote, "\\"):
                out.append(text[i + 1])
                i += 2
            else:
                out.append(ch)
                i += 1
        if i >= end:
            if strict:
                raise _Unclosed(f"Unclosed quote in: {text[pos:]}")
        else:
            i += 1  # the closing quote
    else:
        i = pos
        while i < end and text[i] not in _SPACE:
            ch = text[i]
            if ch == "\\" and i + 1 < end and text[i + 1] == "\\":
                out.append("\\")
                i += 2
            else:
                out.append(ch)
                i += 1
    while i < end and text[i] in _SPACE:
        i += 1
    return "".join(out), i


def split_words(text: str) -> list[str]:
    """All tokens of `text` (see next_word), keeping explicit empty ones such as `""`."""
    words: list[str] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in _SPACE:
            pos += 1
        if pos >= end:
            return words
        word, pos = next_word(text, pos)
        words.append(word)


def logical_lines(
    physical: Sequence[str], *, continuation: bool = True
) -> Iterator[tuple[int, str]]:
    """(first line number, trimmed text) of each non-blank, non-comment logical line.

    A line ending in a single backslash (optionally before CR) is joined to the next one,
    the backslash removed and nothing inserted; a comment can therefore continue too.
    """
    count = len(physical)
    index = 0
    while index < count:
        start = index + 1
        raw = physical[index]
        index += 1
        if continuation:
            parts: list[str] = []
            while True:
                body = raw[:-1] if raw.endswith("\r") else raw
                if body.endswith("\\") and not body.endswith("\\\\") and index < count:
                    parts.append(body[:-1])
                    raw = physical[index]
                    index += 1
                    continue
                parts.append(raw)
                break
            raw = "".join(parts)
        text = raw.strip(_SPACE)
        if text and text[0] != "#":
            yield start, text


@dataclass
class _Source:
    """Logical lines of one file (or of the -C / -c list) being read, with a cursor."""

    name: str
    lines: list[tuple[int, str]]
    pos: int = 0

    def next(self) -> tuple[int, str] | None:
        if self.pos >= len(self.lines):
            return None
        item = self.lines[self.pos]
        self.pos += 1
        return item


@dataclass(frozen=True, slots=True)
class _Open:
    """A section being read: what closes it and where it was opened."""

    name: str  # canonical for known sections, else as written
    line: int


class _Reader:
    """The read-time state Apache keeps while building its config tree."""

    def __init__(
        self,
        *,
        server_root: str,
        defines: dict[str, str] | None,
        default_mpm: str | None,
        is_directive: Callable[[str], bool],
        version: tuple[int, int, int],
    ) -> None:
        self.server_root = os.path.abspath(server_root)
        self.defines: dict[str, str] = dict(defines or {})
        # Only a Define with a value creates a ${variable}; a bare -D/Define does not.
        self.variables: dict[str, str] = {k: v for k, v in self.defines.items() if v}
        self.default_mpm = default_mpm
        self.is_directive = is_directive
        self.version = version
        self.modules: list[str] = []
        self.module_names: set[str] = set()
        for ident, source in STATIC_MODULES:
            self.module_names.update((ident, source))
        self.mpm_loaded = False
        self.warnings: list[str] = []
        self.include_depth = 0

    # ----------------------------------------------------------------- lines and tokens

    def expand(self, text: str, src: _Source, line: int) -> str:
        """Replace ${NAME} from Defines, then the environment; unknown names stay literal."""
        if "${" not in text:
            return text
        out: list[str] = []
        pos = 0
        while True:
            start = text.find("${", pos)
            close = text.find("}", start + 2) if start >= 0 else -1
            if start < 0 or close < 0:
                out.append(text[pos:])
                return "".join(out)
            out.append(text[pos:start])
            name = text[start + 2 : close]
            value = self.variables.get(name)
            if value is None:
                value = os.environ.get(name)
            if value is None:
                if ":" not in name:
                    self.warnings.append(
                        f"{src.name}:{line}: AH00111: Config variable ${{{name}}} is not defined"
                    )
                value = text[start : close + 1]
            out.append(value)
            pos = close + 1

    def words(self, text: str, src: _Source, line: int) -> list[str]:
        try:
            return split_words(text)
        except _Unclosed as exc:
            raise ConfigError(src.name, line, str(exc)) from None

    # ------------------------------------------------------------------------- blocks

    def read_block(self, src: _Source, closer: _Open | None) -> list[Node]:
        """Nodes up to the line closing `closer` (or end of input when closer is None)."""
        nodes: list[Node] = []
        while (item := src.next()) is not None:
            line, raw = item
            text = self.expand(raw, src, line)
            try:
                cmd, pos = next_word(text)
            except _Unclosed as exc:
                raise ConfigError(src.name, line, str(exc)) from None
            if not cmd:
                continue
            if cmd.startswith("</"):
                self.check_close(cmd, closer, src, line)
                return nodes
            if cmd.startswith("<"):
                nodes.extend(self.read_section(cmd, text[pos:], src, line))
            else:
                nodes.extend(self.read_directive(cmd, text[pos:], src, line))
        if closer is not None:
            raise ConfigError(src.name, closer.line, f"<{closer.name}> was not closed.")
        return nodes

    def check_close(self, cmd: str, closer: _Open | None, src: _Source, line: int) -> None:
        if not cmd.endswith(">"):
            raise ConfigError(src.name, line, f"{cmd}> directive missing closing '>'")
        name = cmd[2:-1]
        if closer is None:
            raise ConfigError(src.name, line, f"{cmd} without matching <{name}> section")
        if name.lower() != closer.name.lower():
            raise ConfigError(src.name, line, f"Expected </{closer.name}> but saw {cmd}")

    def read_section(self, cmd: str, rest: str, src: _Source, line: int) -> list[Node]:
        written = cmd[1:-1] if cmd.endswith(">") else cmd[1:]
        if not rest:
            rest = ">"
        canonical = _CANONICAL_SECTION.get(written.lower(), written)
        end = rest.rfind(">")
        if end < 0:
            raise ConfigError(src.name, line, f"<{canonical}> directive missing closing '>'")
        arg_text = rest[:end]
        opened = _Open(canonical, line)
        if canonical in CONDITIONAL_SECTIONS:
            if self.condition(canonical, arg_text, src, line):
                return self.read_block(src, opened)
            self.skip_block(src, opened)
            return []
        args = tuple(self.words(arg_text, src, line))
        children = tuple(self.read_block(src, opened))
        return [Node(written, args, src.name, line, children)]

    def skip_block(self, src: _Source, opened: _Open) -> None:
        """Consume a false conditional's body, still requiring balanced sections.

        Like `ap_soak_end_container`: no variable expansion, nothing executed.
        """
        while (item := src.next()) is not None:
            line, text = item
            cmd, pos = next_word(text, strict=False)
            if cmd.startswith("</"):
                self.check_close(cmd, opened, src, line)
                return
            if cmd.startswith("<"):
                name = cmd[1:-1] if cmd.endswith(">") and pos >= len(text) else cmd[1:]
                self.skip_block(src, _Open(_CANONICAL_SECTION.get(name.lower(), name), line))
        raise ConfigError(src.name, opened.line, f"<{opened.name}> was not closed.")

    # ---------------------------------------------------------------------- conditions

    def condition(self, kind: str, arg_text: str, src: _Source, line: int) -> bool:
        if kind == "IfVersion":
            return self.version_matches(self.words(arg_text, src, line), src, line)
        stripped = arg_text.lstrip(_SPACE)
        negate = stripped.startswith("!")
        if negate:
            stripped = stripped[1:]
        try:
            arg, _ = next_word(stripped)
        except _Unclosed as exc:
            raise ConfigError(src.name, line, str(exc)) from None
        if not arg:
            raise ConfigError(src.name, line, f"<{kind}> directive requires additional arguments")
        if kind == "IfModule":
            result = self.module_present(arg)
        elif kind == "IfDefine":
            result = arg in self.defines
        elif kind == "IfFile":
            result = os.path.exists(self.root_relative(arg))
        elif kind == "IfDirective":
            result = bool(self.is_directive(arg))
        else:  # IfSection
            result = arg.lower() in _CANONICAL_SECTION
        return result != negate

    def module_present(self, name: str) -> bool:
        if name in self.module_names:
            return True
        if self.default_mpm and not self.mpm_loaded:
            return name in _module_aliases(f"mpm_{self.default_mpm}_module", None)
        return False

    def version_matches(self, words: list[str], src: _Source, line: int) -> bool:
        """<IfVersion [[!]op] version> as mod_version evaluates it."""
        if not words:
            raise ConfigError(src.name, line, "<IfVersion> directive requires additional arguments")
        if len(words) > 2:
            raise ConfigError(src.name, line, "<IfVersion> takes one, two or three arguments")
        op, wanted = ("=", words[0]) if len(words) == 1 else (words[0], words[1])
        body, negate = op, False
        if body.startswith("!") and len(body) > 1:
            body, negate = body[1:], True
        kind, tail = body[0] if body else "", body[1:]
        if kind not in "=~<>" or not kind or tail not in ("", "=") or (kind == "~" and tail):
            raise ConfigError(src.name, line, f"unrecognized operator '{op}'")
        current = ".".join(str(part) for part in self.version)
        if kind == "=" and wanted.startswith("/"):
            if len(wanted) < 2 or not wanted.endswith("/"):
                raise ConfigError(src.name, line, "Missing delimiting / of regular expression.")
            kind, wanted = "~", wanted[1:-1]
        if kind == "~":
            try:
                matched = re.search(wanted, current) is not None
            except re.error as exc:
                raise ConfigError(
                    src.name, line, f"Bad regular expression '{wanted}': {exc}"
                ) from None
            return matched != negate
        if not _VERSION.fullmatch(wanted):
            raise ConfigError(src.name, line, _VERSION_FORMAT_ERROR)
        parts = [int(p) for p in wanted.split(".")] + [0, 0]
        want = tuple(parts[:3])
        have = tuple(self.version)
        if kind == "=":
            matched = have == want
        elif kind == "<":
            matched = have < want or (tail == "=" and have == want)
        else:
            matched = have > want or (tail == "=" and have == want)
        return matched != negate

    # ---------------------------------------------------------------------- directives

    def read_directive(self, cmd: str, rest: str, src: _Source, line: int) -> list[Node]:
        args = self.words(rest, src, line)
        key = cmd.lower()
        if key == "define":
            if not 1 <= len(args) <= 2:
                raise ConfigError(src.name, line, _USAGE[key])
            name = self.variable_name(args[0], src, line)
            if len(args) == 2:
                self.variables[name] = args[1]
            self.defines[name] = self.variables.get(name, "")
            return []
        if key == "undefine":
            if len(args) != 1:
                raise ConfigError(src.name, line, _USAGE[key])
            name = self.variable_name(args[0], src, line)
            self.defines.pop(name, None)
            self.variables.pop(name, None)
            return []
        if key in ("include", "includeoptional"):
            if len(args) != 1:
                raise ConfigError(src.name, line, _USAGE[key])
            return self.include(args[0], key == "includeoptional", src, line)
        if key == "serverroot":
            if len(args) != 1:
                raise ConfigError(src.name, line, _USAGE[key])
            root = os.path.abspath(args[0])
            if not os.path.isdir(root):
                raise ConfigError(src.name, line, "ServerRoot must be a valid directory")
            self.server_root = root
        elif key == "loadmodule":
            if len(args) != 2:
                raise ConfigError(src.name, line, _USAGE[key])
            if args[0] in self.modules:
                self.warnings.append(
                    f"{src.name}:{line}: AH01574: module {args[0]} is already loaded, skipping"
                )
                return []
            self.modules.append(args[0])
            self.module_names.update(_module_aliases(args[0], args[1]))
            if args[0].startswith("mpm_"):
                self.mpm_loaded = True
        return [Node(cmd, tuple(args), src.name, line)]

    @staticmethod
    def variable_name(name: str, src: _Source, line: int) -> str:
        if ":" in name:
            raise ConfigError(src.name, line, "Variable name must not contain ':'")
        return name

    def root_relative(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.server_root, path))

    # ------------------------------------------------------------------------ includes

    def include(self, pattern: str, optional: bool, src: _Source, line: int) -> list[Node]:
        """Read the files an Include names (config/includes.py expands them) in place."""
        nodes: list[Node] = []
        try:
            check_include_depth(self.include_depth)
            self.include_depth += 1
            try:
                for file_name in included_files(self.root_relative(pattern), optional):
                    nodes.extend(self.read_file(file_name, src, line))
            finally:
                self.include_depth -= 1
        except IncludeError as exc:
            raise ConfigError(src.name, line, str(exc)) from None
        return nodes

    def read_file(self, path: str, src: _Source | None, line: int) -> list[Node]:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
                text = handle.read()
        except OSError as exc:
            message = f"Could not open configuration file {path}: {os.strerror(exc.errno or 0)}"
            if src is None:
                raise ConfigError(path, 0, message) from None
            raise ConfigError(src.name, line, message) from None
        return self.read_text(text, path)

    def read_text(self, text: str, name: str) -> list[Node]:
        return self.read_block(_Source(name, list(logical_lines(text.split("\n")))), None)

    def read_list(self, directives: Sequence[str], name: str) -> list[Node]:
        """-C / -c lines: one physical line each, no continuation, numbered from 1."""
        lines = list(logical_lines(list(directives), continuation=False))
        return self.read_block(_Source(name, lines), None)

    def result(self, nodes: list[Node]) -> ParseResult:
        return ParseResult(
            nodes=tuple(nodes),
            server_root=self.server_root,
            defines=dict(self.defines),
            modules=tuple(self.modules),
            warnings=tuple(self.warnings),
        )


def _module_aliases(ident: str, so_path: str | None) -> set[str]:
    """Names <IfModule> accepts for a loaded module: identifier and source file name.

    Apache matches `foo_module` or `mod_foo.c` (and `event.c` etc. for an MPM); mpmd also
    accepts the bare `foo` and the .so file name, which users write by mistake.
    """
    names = {ident}
    base = ident[: -len("_module")] if ident.endswith("_module") else ident
    names.update((base, f"mod_{base}.c"))
    if base.startswith("mpm_"):
        names.add(f"{base[4:]}.c")
    if so_path:
        names.add(os.path.basename(so_path))
    return names


def parse_config(
    path: str | None,
    *,
    server_root: str,
    defines: dict[str, str] | None = None,
    pre_directives: Sequence[str] = (),
    post_directives: Sequence[str] = (),
    default_mpm: str | None = None,
    is_directive: Callable[[str], bool] = lambda name: True,
    version: tuple[int, int, int] = (2, 4, 63),
) -> ParseResult:
    """Read -C lines, the main file (if any), then -c lines, as `httpd -f` does."""
    reader = _Reader(
        server_root=server_root,
        defines=defines,
        default_mpm=default_mpm,
        is_directive=is_directive,
        version=version,
    )
    nodes = reader.read_list(pre_directives, "-C")
    if path is not None:
        nodes.extend(reader.read_file(reader.root_relative(path), None, 0))
    nodes.extend(reader.read_list(post_directives, "-c"))
    return reader.result(nodes)


def parse_text(
    text: str,
    filename: str = "<string>",
    *,
    server_root: str | None = None,
    defines: dict[str, str] | None = None,
    pre_directives: Sequence[str] = (),
    post_directives: Sequence[str] = (),
    default_mpm: str | None = None,
    is_directive: Callable[[str], bool] = lambda name: True,
    version: tuple[int, int, int] = (2, 4, 63),
) -> ParseResult:
    """Like parse_config, with the main file's text given; ServerRoot defaults to the cwd."""
    reader = _Reader(
        server_root=server_root if server_root is not None else os.getcwd(),
        defines=defines,
        default_mpm=default_mpm,
        is_directive=is_directive,
        version=version,
    )
    nodes = reader.read_list(pre_directives, "-C")
    nodes.extend(reader.read_text(text, filename))
    nodes.extend(reader.read_list(post_directives, "-c"))
    return reader.result(nodes)

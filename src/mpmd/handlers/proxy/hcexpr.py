"""ProxyHCExpr: the subset of Apache's ap_expr that health-check conditions use.

mod_proxy_hcheck evaluates a ProxyHCExpr against a dummy request whose status, headers and
kept body are the back end's answer to the check. This module parses such an expression once
(at configuration time, so a bad one is a `FILE:LINE` error at `mpmd -t`) into closures, and
evaluates them against an `HCResponse`. Supported, with ap_expr's meaning:

* `true`, `false`, `!`, `&&`, `||` and parentheses;
* words: integers, '…' and "…" strings (with %{VAR} inside), `%{VAR}`, `word . word`, and the
  functions `hc('body')` (mod_proxy_hcheck's), `resp('Header')`, `tolower()`, `toupper()`;
* the variables a health-check answer gives: REQUEST_STATUS, CONTENT_TYPE, REQUEST_METHOD,
  SERVER_PROTOCOL and HC_BODY (any other HC_ name is empty, as Apache's lookup answers);
* `== = != < <= > >=` (string comparisons, strcmp), `-eq -ne -lt -le -gt -ge` (integers),
  `=~` / `!~` with `/re/` or `m#re#` (flag `i`), `-in {word, …}`, `-n`, `-z`.

Anything else is a parse error naming what was not understood. It never does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

Word = Callable[["HCResponse"], str]
Cond = Callable[["HCResponse"], bool]


class ExprError(ValueError):
    """An expression that cannot be parsed, or (at evaluation) an integer test on a non-number."""


@dataclass(frozen=True, slots=True)
class HCResponse:
    """What a health check got back, as the dummy request_rec exposes it."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    method: str = "GET"
    protocol: str = "HTTP/1.0"

    def header(self, name: str) -> str:
        lower = name.lower()
        return ", ".join(v for k, v in self.headers if k.lower() == lower)


def _body(response: HCResponse) -> str:
    """hc_get_body: the flattened kept body, as a C string (cut at the first NUL)."""
    return response.body.decode("latin-1").partition("\0")[0]


_VARIABLES: dict[str, Word] = {
    "REQUEST_STATUS": lambda r: str(r.status),
    "CONTENT_TYPE": lambda r: r.header("Content-Type"),
    "REQUEST_METHOD": lambda r: r.method,
    "SERVER_PROTOCOL": lambda r: r.protocol,
}
_FUNCTIONS: dict[str, Callable[[HCResponse, str], str]] = {
    "hc": lambda r, arg: _body(r) if arg.lower() == "body" else "",
    "resp": lambda r, arg: r.header(arg),
    "tolower": lambda r, arg: arg.lower(),
    "toupper": lambda r, arg: arg.upper(),
}


def _variable(name: str) -> Word:
    upper = name.upper()
    if upper.startswith("HC_"):
        return _body if upper == "HC_BODY" else (lambda r: "")
    try:
        return _VARIABLES[upper]
    except KeyError:
        raise ExprError(f"Variable '{name}' does not exist") from None


# -- tokens --------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<var>%\{(?P<varname>[A-Za-z_][A-Za-z0-9_:]*)\})
    | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<op>&&|\|\||==|!=|<=|>=|=~|!~|[!()<>=.,{}]|-(?:eq|ne|lt|le|gt|ge|in|n|z)\b)
    | (?P<number>\d+)\b
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_REGEX = re.compile(r"\s*(?:/((?:[^/\\]|\\.)*)/|m([^\w\s])(.*?)(?<!\\)\2)([i]*)", re.DOTALL)
_STRING_OPS: dict[str, Callable[[str, str], bool]] = {
    "==": str.__eq__, "=": str.__eq__, "!=": str.__ne__,
    "<": str.__lt__, "<=": str.__le__, ">": str.__gt__, ">=": str.__ge__,
}  # fmt: skip
_INT_OPS: dict[str, Callable[[int, int], bool]] = {
    "-eq": int.__eq__, "-ne": int.__ne__, "-lt": int.__lt__,
    "-le": int.__le__, "-gt": int.__gt__, "-ge": int.__ge__,
}  # fmt: skip


def _integer(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ExprError(f"Not a number: '{text}'") from None


@dataclass
class _Parser:
    text: str
    pos: int = 0
    peeked: tuple[str, str, int] | None = field(default=None)

    # -- tokens
    def _peek(self) -> tuple[str, str]:
        if self.peeked is None:
            m = _TOKEN.match(self.text, self.pos)
            if self.text[self.pos :].strip() == "":
                self.peeked = ("end", "", len(self.text))
            elif m is None or m.end() == self.pos:
                rest = self.text[self.pos :].strip()
                raise ExprError(f"syntax error near '{rest[:20]}'")
            else:
                kind = m.lastgroup if m.lastgroup != "varname" else "var"
                value = m.group("varname") if kind == "var" else m.group(kind)  # type: ignore[arg-type]
                self.peeked = (kind, value, m.end())  # type: ignore[assignment]
        return self.peeked[0], self.peeked[1]

    def _take(self) -> tuple[str, str]:
        kind, value = self._peek()
        self.pos = self.peeked[2]  # type: ignore[index]
        self.peeked = None
        return kind, value

    def _expect(self, op: str) -> None:
        kind, value = self._take()
        if (kind, value) != ("op", op):
            raise ExprError(f"expected '{op}', found '{value or 'end of expression'}'")

    def _at(self, *ops: str) -> str | None:
        kind, value = self._peek()
        return value if kind == "op" and value in ops else None

    # -- grammar
    def parse(self) -> Cond:
        cond = self._or()
        kind, value = self._peek()
        if kind != "end":
            raise ExprError(f"syntax error near '{value}'")
        return cond

    def _or(self) -> Cond:
        left = self._and()
        while self._at("||"):
            self._take()
            left = _either(left, self._and())
        return left

    def _and(self) -> Cond:
        left = self._not()
        while self._at("&&"):
            self._take()
            left = _both(left, self._not())
        return left

    def _not(self) -> Cond:
        if self._at("!"):
            self._take()
            inner = self._not()
            return lambda r: not inner(r)
        return self._primary()

    def _primary(self) -> Cond:
        kind, value = self._peek()
        if kind == "op" and value == "(":
            self._take()
            cond = self._or()
            self._expect(")")
            return cond
        if kind == "name" and value in ("true", "false"):
            self._take()
            result = value == "true"
            return lambda r: result
        if kind == "op" and value in ("-n", "-z"):
            self._take()
            word = self._word()
            return (lambda r: word(r) != "") if value == "-n" else (lambda r: word(r) == "")
        left = self._word()
        kind, op = self._take()
        if kind != "op":
            raise ExprError(f"expected a comparison after a word, found '{op}'")
        if op in ("=~", "!~"):
            return _matcher(left, self._regex(), op == "=~")
        if op == "-in":
            return _member(left, self._list())
        right = self._word()
        if op in _STRING_OPS:
            compare = _STRING_OPS[op]
            return lambda r: compare(left(r), right(r))
        if op in _INT_OPS:
            test = _INT_OPS[op]
            return lambda r: test(_integer(left(r)), _integer(right(r)))
        raise ExprError(f"'{op}' is not a comparison")

    def _regex(self) -> re.Pattern[str]:
        m = _REGEX.match(self.text, self.pos)
        if m is None:
            raise ExprError("expected a regular expression (/…/ or m#…#) after =~ or !~")
        self.pos, self.peeked = m.end(), None
        source = m.group(1) if m.group(1) is not None else m.group(3)
        try:
            return re.compile(source, re.IGNORECASE if m.group(4) else 0)
        except re.error as error:
            raise ExprError(f"invalid regular expression '{source}': {error}") from None

    def _list(self) -> list[Word]:
        self._expect("{")
        words = [self._word()]
        while self._at(","):
            self._take()
            words.append(self._word())
        self._expect("}")
        return words

    def _word(self) -> Word:
        word = self._simple_word()
        while self._at("."):
            self._take()
            word = _concat(word, self._simple_word())
        return word

    def _simple_word(self) -> Word:
        kind, value = self._take()
        if kind == "number":
            return lambda r: value
        if kind == "var":
            return _variable(value)
        if kind == "string":
            return _string(value[1:-1])
        if kind == "name" and self._at("("):
            function = _FUNCTIONS.get(value.lower())
            if function is None:
                raise ExprError(f"Function '{value}' does not exist")
            self._take()
            arg = self._word()
            self._expect(")")
            return lambda r: function(r, arg(r))
        raise ExprError(f"expected a word, found '{value or 'end of expression'}'")


def _either(left: Cond, right: Cond) -> Cond:
    return lambda r: left(r) or right(r)


def _both(left: Cond, right: Cond) -> Cond:
    return lambda r: left(r) and right(r)


def _concat(left: Word, right: Word) -> Word:
    return lambda r: left(r) + right(r)


def _matcher(word: Word, pattern: re.Pattern[str], want: bool) -> Cond:
    return lambda r: (pattern.search(word(r)) is not None) == want


def _member(word: Word, words: list[Word]) -> Cond:
    return lambda r: word(r) in {w(r) for w in words}


_INTERPOLATE = re.compile(r"%\{([A-Za-z_][A-Za-z0-9_:]*)\}|\\(.)|([^%\\]+|%)", re.DOTALL)


def _string(body: str) -> Word:
    """A quoted string: literal text, backslash escapes and %{VAR} references."""
    parts: list[Word] = []
    for m in _INTERPOLATE.finditer(body):
        if m.group(1):
            parts.append(_variable(m.group(1)))
        else:
            text = m.group(2) if m.group(2) is not None else m.group(3)
            parts.append(lambda r, text=text: text)
    return lambda r: "".join(part(r) for part in parts)


@dataclass(frozen=True, slots=True)
class HCExpr:
    """A parsed ProxyHCExpr; `matches(response)` may raise ExprError (Apache's AH03301 case)."""

    text: str
    _cond: Cond = field(repr=False, compare=False)

    def matches(self, response: HCResponse) -> bool:
        return self._cond(response)


def parse(text: str) -> HCExpr:
    """Parse an expression (without or with the `{…}` of the directive); ExprError if bad."""
    source = text.strip()
    if source.startswith("{") and source.endswith("}"):
        source = source[1:-1].strip()
    if not source:
        raise ExprError("empty expression")
    return HCExpr(source, _Parser(source).parse())

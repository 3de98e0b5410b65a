"""ProxyHCExpr: the ap_expr subset health checks use, with the Apache docs' examples."""

from __future__ import annotations

import pytest

from mpmd.handlers.proxy.hcexpr import ExprError, HCResponse, parse

OK = HCResponse(200, (("Content-Type", "text/html"), ("X-Up", "1")), b"<p>All is well</p>")
DOWN = HCResponse(503, (("Content-Type", "text/plain"),), b"Out of Inventory\n")
MOVED = HCResponse(302, (), b"")


@pytest.mark.parametrize(
    ("text", "ok", "down", "moved"),
    [
        # mod_proxy_hcheck's documentation
        ("{%{REQUEST_STATUS} =~ /^[234]/}", True, False, True),
        ("{%{REQUEST_STATUS} =~ /^[5]/}", False, True, False),
        ("{hc('body') !~ /Out of Inventory/}", True, False, True),
        # the rest of the subset
        ("%{REQUEST_STATUS} -eq 200", True, False, False),
        ("%{REQUEST_STATUS} -ne 200", False, True, True),
        ("%{REQUEST_STATUS} -lt 400 && %{REQUEST_STATUS} -ge 300", False, False, True),
        ("%{REQUEST_STATUS} -le 302 || %{REQUEST_STATUS} -gt 500", True, True, True),
        ("!(%{REQUEST_STATUS} -lt 400)", False, True, False),
        ("! %{REQUEST_STATUS} == 503", True, False, True),
        ("%{REQUEST_STATUS} == 200", True, False, False),
        ("%{REQUEST_STATUS} = 302", False, False, True),
        ("%{REQUEST_STATUS} != 200", False, True, True),
        ("%{REQUEST_STATUS} < 3", True, False, False),  # strings: "200" < "3" < "302"
        ("%{REQUEST_STATUS} >= 5", False, True, False),
        ("%{REQUEST_STATUS} <= 302 && %{REQUEST_STATUS} > 1", True, False, True),
        ("%{CONTENT_TYPE} =~ m#^text/html#", True, False, False),
        ("%{HC_BODY} =~ /all IS well/i", True, False, False),
        ("%{HC_OTHER} == ''", True, True, True),
        ("resp('content-type') =~ /plain/", False, True, False),
        ("resp('X-Up') == '1'", True, False, False),
        ("tolower(hc('BODY')) =~ /out of/", False, True, False),
        ("toupper(hc('body')) =~ /ALL/", True, False, False),
        ("%{REQUEST_STATUS} -in {'200', '302'}", True, False, True),
        ("'%{REQUEST_STATUS}-x' == \"200-x\"", True, False, False),
        ("%{REQUEST_STATUS} . 'x' == '503x'", False, True, False),
        ("-n hc('body')", True, True, False),
        ("-z hc('body')", False, False, True),
        ("%{REQUEST_METHOD} == 'GET' && %{SERVER_PROTOCOL} == 'HTTP/1.0'", True, True, True),
        ("true", True, True, True),
        ("false || (true && !false)", True, True, True),
    ],
)
def test_expressions(text: str, ok: bool, down: bool, moved: bool) -> None:
    expr = parse(text)
    assert [expr.matches(r) for r in (OK, DOWN, MOVED)] == [ok, down, moved]


def test_the_body_is_a_c_string_and_bytes_pass_through() -> None:
    response = HCResponse(200, (), b"up\x00 Out of Inventory \xff")
    assert parse("hc('body') !~ /Out of Inventory/").matches(response)
    assert parse("hc('body') == 'up'").matches(response)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("%{NOPE} == 1", "Variable 'NOPE' does not exist"),
        ("foo(1) == 1", "Function 'foo' does not exist"),
        ("%{REQUEST_STATUS} =~", "expected a regular expression"),
        ("%{REQUEST_STATUS} =~ /(/", "invalid regular expression"),
        ("(true", "expected ')'"),
        ("true false", "syntax error near 'false'"),
        ("%{REQUEST_STATUS}", "expected a comparison"),
        ("%{REQUEST_STATUS} -eq", "expected a word"),
        ("%{REQUEST_STATUS} ~ 1", "syntax error near '~ 1'"),
        ("%{REQUEST_METHOD} == GET", "expected a word, found 'GET'"),
        ("{}", "empty expression"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ExprError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


def test_an_integer_test_on_a_word_that_is_no_number_fails_at_evaluation() -> None:
    expr = parse("hc('body') -eq 1")
    with pytest.raises(ExprError, match="Not a number"):
        expr.matches(OK)

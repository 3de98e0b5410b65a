"""config.syntax: the Apache configuration language, checked against Apache 2.4's behaviour."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mpmd.config.syntax import ConfigError, Node, parse_config, parse_text, split_words

APACHE_DIR = Path("/etc/apache2")
needs_apache = pytest.mark.skipif(
    not (APACHE_DIR / "apache2.conf").is_file(),
    reason="Debian apache2 package not installed (/etc/apache2/apache2.conf missing)",
)


def directives(text: str, **kw) -> list[tuple[str, tuple[str, ...]]]:
    """(name, args) of each top-level node."""
    return [(n.name, n.args) for n in parse_text(text, "t.conf", **kw).nodes]


def error_of(text: str, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_text(text, "t.conf", **kw)
    return info.value


# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("a b\tc", ["a", "b", "c"]),
        ('"a b" c', ["a b", "c"]),
        ("'a b' c", ["a b", "c"]),
        (r'"a\"b"', ['a"b']),
        (r"'a\'b'", ["a'b"]),
        (r"'a\"b'", [r"a\"b"]),  # only the token's own quote is escapable
        (r'"a\\b"', ["a\\b"]),
        (r'"a\xb"', [r"a\xb"]),  # any other backslash is literal
        (r"a\\b", ["a\\b"]),  # `\\` unescaped outside quotes too
        (r"C:\path\x", [r"C:\path\x"]),
        ('"ab"cd', ["ab", "cd"]),  # a quoted token ends at its quote
        ('x ""', ["x", ""]),  # an explicit empty argument is kept
        ("a#b # c", ["a#b", "#", "c"]),
        ("   ", []),
    ],
)
def test_tokenizer_matches_ap_getword_conf(line: str, words: list[str]) -> None:
    assert split_words(line) == words


def test_quoted_arguments_reach_the_node() -> None:
    text = 'LogFormat "%h \\"%r\\" %>s" combined\nHeader set X \'it\\\'s\'\n'
    assert directives(text) == [
        ("LogFormat", ('%h "%r" %>s', "combined")),
        ("Header", ("set", "X", "it's")),
    ]


def test_unclosed_quote_is_an_error_with_its_line() -> None:
    err = error_of('ServerName x\nServerAdmin "root@x\n')
    assert (err.file, err.line) == ("t.conf", 2)
    assert "quote" in err.message.lower()


# --------------------------------------------------------------- lines and comments


def test_continuation_joins_lines_without_inserting_anything() -> None:
    result = parse_text("Options a\\\nb\nOptions c \\\n   d\nListen 80\n", "t.conf")
    assert [(n.name, n.args, n.line) for n in result.nodes] == [
        ("Options", ("ab",), 1),
        ("Options", ("c", "d"), 3),
        ("Listen", ("80",), 5),
    ]


def test_double_backslash_at_end_is_not_a_continuation() -> None:
    assert directives("Options a\\\\\nListen 80\n") == [
        ("Options", ("a\\",)),
        ("Listen", ("80",)),
    ]


def test_crlf_lines_and_crlf_continuation() -> None:
    assert directives("Timeout 5\r\nOptions a \\\r\n b\r\n") == [
        ("Timeout", ("5",)),
        ("Options", ("a", "b")),
    ]


def test_backslash_then_space_is_not_a_continuation() -> None:
    assert directives("Options a\\ \nListen 80\n") == [("Options", ("a\\",)), ("Listen", ("80",))]


def test_comments_blank_lines_and_no_trailing_comments() -> None:
    text = "# comment\n   # indented comment\n\n\t\nServerName x # not a comment\n"
    assert directives(text) == [("ServerName", ("x", "#", "not", "a", "comment"))]


def test_comment_continues_onto_next_line() -> None:
    assert directives("# comment \\\nOptions swallowed\nListen 80\n") == [("Listen", ("80",))]


def test_directive_name_case_is_kept_and_line_numbers_are_exact() -> None:
    result = parse_text("\n\nmaxrequestworkers 10\n  KEEPALIVE on\n", "t.conf")
    assert [(n.name, n.where) for n in result.nodes] == [
        ("maxrequestworkers", "t.conf:3"),
        ("KEEPALIVE", "t.conf:4"),
    ]


# ------------------------------------------------------------------------- sections


def test_sections_nest_and_keep_file_line() -> None:
    text = (
        "<VirtualHost *:80>\n"
        "  ServerName a\n"
        '  <Directory "/srv/x" >\n'
        "    Require all granted\n"
        "  </directory>\n"
        "  <Location /s>\n"
        "  </Location>\n"
        "</VIRTUALHOST>\n"
    )
    (vhost,) = parse_text(text, "t.conf").nodes
    assert vhost == Node(
        "VirtualHost",
        ("*:80",),
        "t.conf",
        1,
        (
            Node("ServerName", ("a",), "t.conf", 2),
            Node(
                "Directory",
                ("/srv/x",),
                "t.conf",
                3,
                (Node("Require", ("all", "granted"), "t.conf", 4),),
            ),
            Node("Location", ("/s",), "t.conf", 6, ()),
        ),
    )


def test_section_argument_with_greater_than_inside_quotes() -> None:
    (node,) = parse_text('<If "%{REQUEST_URI} > 5">\n</If>\n', "t.conf").nodes
    assert (node.name, node.args, node.children) == ("If", ("%{REQUEST_URI} > 5",), ())


def test_unknown_sections_are_generic_and_else_has_no_args() -> None:
    nodes = parse_text("<Foo bar>\nX 1\n</foo>\n<Else>\n</Else>\n", "t.conf").nodes
    assert [(n.name, n.args, len(n.children or ())) for n in nodes] == [
        ("Foo", ("bar",), 1),
        ("Else", (), 0),
    ]


def test_mismatched_close_names_both_sections_at_the_close_line() -> None:
    err = error_of("<VirtualHost *:80>\n<Directory /x>\n</VirtualHost>\n")
    assert (err.file, err.line, err.message) == (
        "t.conf",
        3,
        "Expected </Directory> but saw </VirtualHost>",
    )


def test_close_without_open() -> None:
    err = error_of("ServerName x\n</VirtualHost>\n")
    assert (err.line, err.message) == (2, "</VirtualHost> without matching <VirtualHost> section")


def test_unclosed_section_reported_at_its_opening_line() -> None:
    err = error_of("ServerName x\n<VirtualHost *:80>\nServerName y\n")
    assert (err.file, err.line, err.message) == ("t.conf", 2, "<VirtualHost> was not closed.")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("<Directory /x\n</Directory>\n", 1, "<Directory> directive missing closing '>'"),
        ("<Directory /x>\n</Directory\n", 2, "</Directory> directive missing closing '>'"),
        ("<IfModule>\n</IfModule>\n", 1, "<IfModule> directive requires additional arguments"),
    ],
)
def test_malformed_section_lines(text: str, line: int, message: str) -> None:
    err = error_of(text)
    assert (err.line, err.message) == (line, message)


# --------------------------------------------------------------------- conditionals


def test_ifmodule_by_identifier_and_source_file_with_negation() -> None:
    text = (
        "LoadModule status_module /usr/lib/apache2/modules/mod_status.so\n"
        "<IfModule status_module>\nA 1\n</IfModule>\n"
        "<IfModule mod_status.c>\nB 1\n</IfModule>\n"
        "<IfModule !status_module>\nC 1\n</IfModule>\n"
        "<IfModule rewrite_module>\nD 1\n</IfModule>\n"
        "<IfModule !mod_rewrite.c>\nE 1\n</IfModule>\n"
        "<IfModule ! rewrite_module>\nF 1\n</IfModule>\n"
    )
    assert [n.name for n in parse_text(text, "t.conf").nodes] == ["LoadModule", "A", "B", "E", "F"]


def test_ifmodule_sees_only_modules_loaded_earlier() -> None:
    text = (
        "<IfModule alias_module>\nBefore 1\n</IfModule>\n"
        "LoadModule alias_module modules/mod_alias.so\n"
        "<IfModule alias_module>\nAfter 1\n</IfModule>\n"
    )
    assert [n.name for n in parse_text(text, "t.conf").nodes] == ["LoadModule", "After"]


@pytest.mark.parametrize(
    "name",
    ["core_module", "core.c", "mod_so.c", "http_core.c", "log_config_module", "mod_unixd.c"],
)
def test_static_modules_are_always_present(name: str) -> None:
    assert directives(f"<IfModule {name}>\nX 1\n</IfModule>\n") == [("X", ("1",))]


def test_mpm_names_and_default_mpm() -> None:
    block = (
        "<IfModule mpm_event_module>\nE 1\n</IfModule>\n"
        "<IfModule event.c>\nEC 1\n</IfModule>\n"
        "<IfModule mod_mpm_event.c>\nEM 1\n</IfModule>\n"
        "<IfModule mpm_prefork_module>\nP 1\n</IfModule>\n"
    )
    names = [n.name for n in parse_text(block, "t.conf", default_mpm="event").nodes]
    assert names == ["E", "EC", "EM"]
    assert parse_text(block, "t.conf").nodes == ()
    loaded = "LoadModule mpm_prefork_module modules/mod_mpm_prefork.so\n" + block
    names = [n.name for n in parse_text(loaded, "t.conf", default_mpm="event").nodes]
    assert names == ["LoadModule", "P"]


def test_ifdefine_with_and_without_negation() -> None:
    text = "<IfDefine SSL>\nA 1\n</IfDefine>\n<IfDefine !SSL>\nB 1\n</IfDefine>\n"
    assert [n.name for n in parse_text(text, "t.conf").nodes] == ["B"]
    assert [n.name for n in parse_text(text, "t.conf", defines={"SSL": ""}).nodes] == ["A"]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("2.4.63", True),
        ("2.4", False),  # omitted parts are 0: 2.4 means 2.4.0
        ("= 2.4.63", True),
        ("== 2.4.63", True),
        ("!= 2.4.63", False),
        (">= 2.4", True),
        ("> 2.4.63", False),
        (">= 2.4.63", True),
        ("< 2.5", True),
        ("<= 2.4.62", False),
        ("~ ^2\\.4", True),
        ("!~ ^2\\.4", False),
        ("/^2\\.4\\.6/", True),
        ("= /^2\\.2/", False),
        ('"2.4.63"', True),
        ("2", False),
    ],
)
def test_ifversion(condition: str, expected: bool) -> None:
    nodes = parse_text(f"<IfVersion {condition}>\nX 1\n</IfVersion>\n", "t.conf").nodes
    assert bool(nodes) is expected


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("=~ 2", "unrecognized operator '=~'"),
        ("! 2.4", "unrecognized operator '!'"),
        (
            "2.4.x",
            "Version appears to be invalid. It must have the format major[.minor[.patch]] "
            "where major, minor and patch are numbers.",
        ),
    ],
)
def test_ifversion_errors(condition: str, message: str) -> None:
    assert error_of(f"<IfVersion {condition}>\n</IfVersion>\n").message == message


def test_iffile_is_relative_to_server_root(tmp_path: Path) -> None:
    (tmp_path / "present.conf").write_text("")
    text = (
        "<IfFile present.conf>\nA 1\n</IfFile>\n"
        "<IfFile !present.conf>\nB 1\n</IfFile>\n"
        "<IfFile missing.conf>\nC 1\n</IfFile>\n"
        f"<IfFile {tmp_path}>\nD 1\n</IfFile>\n"
    )
    names = [n.name for n in parse_text(text, "t.conf", server_root=str(tmp_path)).nodes]
    assert names == ["A", "D"]


def test_ifdirective_uses_the_callback_and_ifsection_knows_sections() -> None:
    text = (
        "<IfDirective MaxRequestWorkers>\nA 1\n</IfDirective>\n"
        "<IfDirective !RewriteEngine>\nB 1\n</IfDirective>\n"
        "<IfSection VirtualHost>\nC 1\n</IfSection>\n"
        "<IfSection !virtualhost>\nD 1\n</IfSection>\n"
        "<IfSection ServerName>\nE 1\n</IfSection>\n"
    )
    known = {"maxrequestworkers"}
    names = [
        n.name for n in parse_text(text, "t.conf", is_directive=lambda d: d.lower() in known).nodes
    ]
    assert names == ["A", "B", "C"]


def test_true_conditionals_inline_into_their_parent_section() -> None:
    text = (
        "<VirtualHost *:80>\n"
        "<IfModule core_module>\n<IfDefine !X>\nServerName in\n</IfDefine>\n</IfModule>\n"
        "</VirtualHost>\n"
    )
    (vhost,) = parse_text(text, "t.conf").nodes
    assert vhost.children == (Node("ServerName", ("in",), "t.conf", 4),)


def test_false_conditional_is_skipped_but_must_be_balanced() -> None:
    text = (
        '<IfModule nope_module>\n<VirtualHost *:80>\nBogus "unclosed\n${UNSET}\n'
        "</VirtualHost>\n</IfModule>\nListen 80\n"
    )
    result = parse_text(text, "t.conf")
    assert [(n.name, n.args) for n in result.nodes] == [("Listen", ("80",))]
    assert result.warnings == ()  # skipped lines are not expanded, as in Apache


def test_false_conditional_with_mismatched_close() -> None:
    err = error_of("<IfModule nope_module>\n<Directory /x>\n</VirtualHost>\n</IfModule>\n")
    assert (err.line, err.message) == (3, "Expected </Directory> but saw </VirtualHost>")


@pytest.mark.parametrize("module", ["core_module", "nope_module"])
def test_unclosed_conditional_true_or_false(module: str) -> None:
    err = error_of(f"Listen 80\n<IfModule {module}>\nX 1\n")
    assert (err.file, err.line, err.message) == ("t.conf", 2, "<IfModule> was not closed.")


def test_mismatched_close_inside_true_conditional() -> None:
    err = error_of("<IfModule core_module>\n</VirtualHost>\n")
    assert (err.line, err.message) == (2, "Expected </IfModule> but saw </VirtualHost>")


# ------------------------------------------------------------- Define and variables


def test_define_undefine_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPMD_TEST_ENV", "from-env")
    monkeypatch.delenv("MPMD_TEST_UNSET", raising=False)
    text = (
        "Define ROOT /srv\n"
        "Define DOCS ${ROOT}/docs\n"
        "DocumentRoot ${DOCS}\n"
        "ServerAdmin ${MPMD_TEST_ENV}\n"
        "Define MPMD_TEST_ENV overridden\n"
        "ServerName ${MPMD_TEST_ENV}\n"
        "Define BARE\n"
        "UnDefine ROOT\n"
        "Alias ${ROOT} $x${ ${X:y}\n"
        "<IfDefine BARE>\nKeep 1\n</IfDefine>\n"
        "<IfDefine ROOT>\nGone 1\n</IfDefine>\n"
        "Options ${MPMD_TEST_UNSET}\n"
    )
    result = parse_text(text, "t.conf")
    assert [(n.name, n.args) for n in result.nodes] == [
        ("DocumentRoot", ("/srv/docs",)),
        ("ServerAdmin", ("from-env",)),
        ("ServerName", ("overridden",)),
        ("Alias", ("${ROOT}", "$x${", "${X:y}")),
        ("Keep", ("1",)),
        ("Options", ("${MPMD_TEST_UNSET}",)),
    ]
    assert result.defines == {"DOCS": "/srv/docs", "MPMD_TEST_ENV": "overridden", "BARE": ""}
    assert result.warnings == (
        "t.conf:9: AH00111: Config variable ${ROOT} is not defined",
        "t.conf:16: AH00111: Config variable ${MPMD_TEST_UNSET} is not defined",
    )


def test_bare_define_is_not_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLAG", raising=False)
    result = parse_text("Define FLAG\nOptions ${FLAG}\n", "t.conf")
    assert result.nodes[0].args == ("${FLAG}",)
    assert len(result.warnings) == 1


def test_command_line_defines_apply_to_ifdefine() -> None:
    result = parse_text(
        "<IfDefine FOREGROUND>\nX 1\n</IfDefine>\n", "t.conf", defines={"FOREGROUND": ""}
    )
    assert [n.name for n in result.nodes] == ["X"]
    assert result.defines == {"FOREGROUND": ""}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Define", "Define takes 1-2 arguments"),
        ("Define a b c", "Define takes 1-2 arguments"),
        ("Define a:b c", "Variable name must not contain ':'"),
        ("UnDefine", "UnDefine takes one argument"),
    ],
)
def test_define_errors(line: str, message: str) -> None:
    err = error_of(f"Listen 80\n{line}\n")
    assert err.line == 2
    assert err.message.startswith(message)


# ------------------------------------------------------------------------ -C and -c


def test_pre_and_post_directives_wrap_the_file() -> None:
    result = parse_text(
        "<IfDefine EARLY>\nMiddle ${LATE}\n</IfDefine>\n",
        "t.conf",
        pre_directives=["Define EARLY", "Define LATE yes"],
        post_directives=["Listen 8080", "# comment", "Timeout 3"],
    )
    assert [(n.name, n.args, n.where) for n in result.nodes] == [
        ("Middle", ("yes",), "t.conf:2"),
        ("Listen", ("8080",), "-c:1"),
        ("Timeout", ("3",), "-c:3"),
    ]


def test_errors_in_command_line_directives_name_them() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(None, server_root="/", pre_directives=["Listen 80", "<VirtualHost *:80>"])
    assert str(info.value) == "-C:2: <VirtualHost> was not closed."


# ------------------------------------------------------------------------- includes


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_include_relative_to_server_root_with_file_lines(tmp_path: Path) -> None:
    write(tmp_path / "conf/extra.conf", "\nListen 81\n<Location /x>\nA 1\n</Location>\n")
    main = write(tmp_path / "conf/main.conf", "Listen 80\nInclude conf/extra.conf\nListen 82\n")
    result = parse_config(str(main), server_root=str(tmp_path))
    extra = str(tmp_path / "conf/extra.conf")
    assert [(n.name, n.where) for n in result.nodes] == [
        ("Listen", f"{main}:1"),
        ("Listen", f"{extra}:2"),
        ("Location", f"{extra}:3"),
        ("Listen", f"{main}:3"),
    ]
    assert result.nodes[2].children == (Node("A", ("1",), extra, 4),)


def test_main_file_relative_to_server_root(tmp_path: Path) -> None:
    write(tmp_path / "conf/httpd.conf", "Listen 80\n")
    result = parse_config("conf/httpd.conf", server_root=str(tmp_path))
    assert result.nodes[0].file == str(tmp_path / "conf/httpd.conf")


def test_include_wildcards_in_file_and_directory_components(tmp_path: Path) -> None:
    write(tmp_path / "sites/b/site.conf", "B 1\n")
    write(tmp_path / "sites/a/site.conf", "A 1\n")
    write(tmp_path / "sites/a/other.txt", "Skip 1\n")
    write(tmp_path / "sites/notdir.conf", "NotDir 1\n")
    write(tmp_path / "mods/20-z.load", "Z 1\n")
    write(tmp_path / "mods/10-y.load", "Y 1\n")
    write(tmp_path / "mods/.hidden.load", "Hidden 1\n")
    text = "Include mods/*.load\nInclude sites/*/*.conf\nInclude sites/[ab]/site.conf\n"
    names = [n.name for n in parse_text(text, "t.conf", server_root=str(tmp_path)).nodes]
    assert names == ["Y", "Z", "A", "B", "A", "B"]


def test_include_directory_reads_everything_recursively_in_order(tmp_path: Path) -> None:
    write(tmp_path / "d/b.conf", "B 1\n")
    write(tmp_path / "d/a/z.conf", "AZ 1\n")
    write(tmp_path / "d/.dot", "Dot 1\n")
    (tmp_path / "d/empty").mkdir()
    names = [n.name for n in parse_text("Include d\n", "t.conf", server_root=str(tmp_path)).nodes]
    assert names == ["Dot", "AZ", "B"]


def test_include_wildcard_without_match_fails_but_optional_does_not(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    err = error_of("Listen 80\nInclude empty/*.conf\n", server_root=str(tmp_path))
    assert (err.line, err.message) == (
        2,
        f"Include/IncludeOptional: No matches for the wildcard '*.conf' in "
        f"'{tmp_path / 'empty'}', failing",
    )
    text = (
        "IncludeOptional empty/*.conf\nIncludeOptional nodir/*.conf\n"
        "IncludeOptional missing.conf\nIncludeOptional */none.conf\nListen 80\n"
    )
    assert directives(text, server_root=str(tmp_path)) == [("Listen", ("80",))]


def test_include_missing_plain_file_and_directory(tmp_path: Path) -> None:
    err = error_of("Include missing.conf\n", server_root=str(tmp_path))
    assert err.message == (
        f"Could not open configuration file {tmp_path / 'missing.conf'}: No such file or directory"
    )
    err = error_of("Include nodir/*.conf\n", server_root=str(tmp_path))
    assert err.message == (
        f"Include/IncludeOptional: Could not open directory {tmp_path / 'nodir'}: "
        "No such file or directory"
    )
    (tmp_path / "x").mkdir()
    err = error_of("Include */absent.conf\n", server_root=str(tmp_path))
    assert err.message.startswith(f"Could not open configuration file {tmp_path / 'x/absent.conf'}")


def test_include_argument_count() -> None:
    assert error_of("Include\n").message.startswith("Include takes one argument")
    assert error_of("IncludeOptional a b\n").message.startswith(
        "IncludeOptional takes one argument"
    )


def test_error_inside_included_file_points_into_it(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.conf", "Listen 80\n<VirtualHost *:80>\n")
    err = error_of("Include bad.conf\n", server_root=str(tmp_path))
    assert (err.file, err.line, err.message) == (str(bad), 2, "<VirtualHost> was not closed.")


def test_sections_cannot_span_included_files(tmp_path: Path) -> None:
    write(tmp_path / "close.conf", "</VirtualHost>\n")
    err = error_of(
        "<VirtualHost *:80>\nInclude close.conf\n</VirtualHost>\n", server_root=str(tmp_path)
    )
    assert err.file == str(tmp_path / "close.conf")
    assert err.message == "</VirtualHost> without matching <VirtualHost> section"


def test_include_recursion_stops_at_depth_128(tmp_path: Path) -> None:
    loop = write(tmp_path / "loop.conf", "Listen 80\nInclude loop.conf\n")
    with pytest.raises(ConfigError) as info:
        parse_config(str(loop), server_root=str(tmp_path))
    assert (info.value.file, info.value.line) == (str(loop), 2)
    assert info.value.message == (
        "Exceeded maximum include depth of 128, There appears to be a recursion."
    )


def test_defines_reach_into_includes_and_back(tmp_path: Path) -> None:
    write(tmp_path / "inc.conf", "<IfDefine CLI>\nDefine FROM_INC v\n</IfDefine>\n")
    text = "Include inc.conf\nServerName ${FROM_INC}\n"
    result = parse_text(text, "t.conf", server_root=str(tmp_path), defines={"CLI": ""})
    assert [(n.name, n.args) for n in result.nodes] == [("ServerName", ("v",))]


def test_server_root_applies_to_later_includes(tmp_path: Path) -> None:
    write(tmp_path / "other/x.conf", "X 1\n")
    (tmp_path / "start").mkdir()
    text = f"ServerRoot {tmp_path / 'other'}\nInclude x.conf\n"
    result = parse_text(text, "t.conf", server_root=str(tmp_path / "start"))
    assert [n.name for n in result.nodes] == ["ServerRoot", "X"]
    assert result.server_root == str(tmp_path / "other")
    err = error_of(f"ServerRoot {tmp_path / 'nope'}\n")
    assert err.message == "ServerRoot must be a valid directory"


def test_loadmodule_recorded_once_with_warning() -> None:
    text = (
        "LoadModule alias_module m/mod_alias.so\nLoadModule mpm_event_module m/e.so\n"
        "LoadModule alias_module m/mod_alias.so\n"
    )
    result = parse_text(text, "t.conf")
    assert result.modules == ("alias_module", "mpm_event_module")
    assert [n.args[0] for n in result.nodes] == ["alias_module", "mpm_event_module"]
    assert result.warnings == (
        "t.conf:3: AH01574: module alias_module is already loaded, skipping",
    )
    assert error_of("LoadModule foo_module\n").message.startswith("LoadModule takes two arguments")


# ---------------------------------------------------------- Debian's own configuration


def apache_environment() -> dict[str, str]:
    out = subprocess.run(
        ["bash", "-c", "source /etc/apache2/envvars && env -0"],
        check=True,
        capture_output=True,
        timeout=10,
    ).stdout
    pairs = (item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    return dict(pairs)


@needs_apache
def test_debian_apache2_conf_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in apache_environment().items():
        monkeypatch.setenv(key, value)
    result = parse_config(str(APACHE_DIR / "apache2.conf"), server_root=str(APACHE_DIR))
    assert result.warnings == ()
    names = {n.name for n in result.nodes}
    assert {"PidFile", "Timeout", "LogFormat", "Directory", "LoadModule"} <= names
    pid = next(n for n in result.nodes if n.name == "PidFile")
    assert pid.args == (os.environ["APACHE_PID_FILE"],)
    assert any(m.startswith("mpm_") for m in result.modules)


@needs_apache
@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_debian_mpm_conf_files(mpm: str) -> None:
    text = (
        f"LoadModule mpm_{mpm}_module /usr/lib/apache2/modules/mod_mpm_{mpm}.so\n"
        f"Include mods-available/mpm_{mpm}.conf\n"
    )
    result = parse_text(text, "main.conf", server_root=str(APACHE_DIR))
    settings = {n.name: n.args for n in result.nodes if n.name != "LoadModule"}
    assert settings["StartServers"] in (("2",), ("5",))
    assert "MaxRequestWorkers" in settings
    assert all(n.file.endswith(f"mpm_{mpm}.conf") for n in result.nodes[1:])

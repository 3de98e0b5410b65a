"""config/proxy.py and proxy_params.py: mod_proxy's directives → ProxySettings, Balancers (7.1-7.6).

The builder is tested on loaded configurations (exact model values); every refusal is tested
through the real `mpmd -t`, which must print `FILE:LINE: message` and exit 1 without a traceback.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys

import pytest

from mpmd.config.build import load_config
from mpmd.config.model import (
    BackendMember,
    Balancer,
    BalancerParams,
    ProxyRoute,
    ProxySettings,
    ReverseRule,
    ServerConfig,
    WorkerParams,
)
from mpmd.config.proxy_params import apply_status, interval
from mpmd.config.validators import DirectiveValueError

REFERENCE = """\
Listen 127.0.0.1:8080
<Proxy "balancer://mycluster">
    BalancerMember "http://10.0.0.1:8080" route=a loadfactor=2
    BalancerMember "http://10.0.0.2:8080" route=b status=+H
    ProxySet lbmethod=byrequests stickysession=ROUTEID
</Proxy>
ProxyPass        "/app" "balancer://mycluster"
ProxyPassReverse "/app" "balancer://mycluster"
"""


def _load(tmp_path: pathlib.Path, text: str) -> tuple[ServerConfig, str]:
    conf = tmp_path / "httpd.conf"
    conf.write_text("Listen 127.0.0.1:8080\n" + text)
    return load_config(str(conf)), str(conf)


def _member(url: str, source: str, **params) -> BackendMember:
    scheme, rest = url.split("://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    return BackendMember(url, scheme, host, int(port), "/" + path if path else "",  # type: ignore[arg-type]
                         WorkerParams(**params), source)  # fmt: skip


def test_reference_example_builds_the_exact_model(tmp_path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text(REFERENCE)
    config = load_config(str(conf))
    assert config.balancers == (
        Balancer(
            name="balancer://mycluster",
            members=(
                _member("http://10.0.0.1:8080", f"{conf}:3", route="a", loadfactor=200),
                _member("http://10.0.0.2:8080", f"{conf}:4", route="b", status="H"),
            ),
            params=BalancerParams(
                lbmethod="byrequests", sticky_cookie="ROUTEID", sticky_param="ROUTEID"
            ),
            source=f"{conf}:2",
        ),
    )
    assert config.main.proxy == ProxySettings(
        routes=(ProxyRoute("/app", False, "balancer://mycluster", None, f"{conf}:7"),),
        reverse=(ReverseRule("/app", "balancer://mycluster"),),
    )
    assert (config.proxy_status, config.hc_expressions, config.warnings) == (False, (), ())


def test_virtual_host_inherits_settings_and_routes_in_mod_proxy_order(tmp_path) -> None:
    config, conf = _load(
        tmp_path,
        """\
ProxyPreserveHost On
ProxyTimeout 30
ProxyPass /main http://main:81/
<Location /loc>
    ProxyPass http://loc:82/x
</Location>
<VirtualHost *:8080>
    ServerName v.example
    ProxyVia Full
    ProxyAddHeaders Off
    ProxyPass /own http://own:83
    ProxyPassReverse /own http://own:83
    <Location /vloc>
        ProxyPass http://vloc:84
    </Location>
    <Location /vloc2>
        ProxyPass http://vloc:85
    </Location>
</VirtualHost>
<VirtualHost *:8080>
    ServerName w.example
    ProxyTimeout 5
    ProxyPreserveHost Off
    ProxyErrorOverride On 502 503
</VirtualHost>
""",
    )
    main, (v, w) = config.main.proxy, (h.proxy for h in config.vhosts)
    assert [(r.path, r.target) for r in main.routes] == [
        ("/loc", "http://loc:82/x"), ("/main", "http://main:81/")]  # fmt: skip
    assert (main.preserve_host, main.timeout, main.add_headers, main.via) == (
        True,
        30.0,
        True,
        "Off",
    )
    assert [r.path for r in v.routes] == ["/vloc2", "/vloc", "/loc", "/main", "/own"]
    assert (v.preserve_host, v.timeout, v.add_headers, v.via) == (True, 30.0, False, "Full")
    assert v.reverse == (ReverseRule("/own", "http://own:83"),)
    assert [r.path for r in w.routes] == ["/loc", "/main"]
    assert (w.preserve_host, w.timeout, w.error_override) == (False, 5.0, True)
    assert w.error_override_codes == frozenset({502, 503})
    assert main.routes[1].member == _member("http://main:81", f"{conf}:4")
    assert main.routes[0].member == _member("http://loc:82/x", f"{conf}:6")


def test_proxy_pass_match_keeps_the_regex_and_the_template(tmp_path) -> None:
    config, conf = _load(
        tmp_path, 'ProxyPassMatch "^/img/(.*\\.png)$" "http://Img.Example:8000/png/$1" ttl=5\n'
    )
    (route,) = config.main.proxy.routes
    assert (route.path, route.regex, route.target) == (
        "^/img/(.*\\.png)$", True, "http://Img.Example:8000/png/$1")  # fmt: skip
    assert route.member == _member("http://img.example:8000", f"{conf}:2", ttl=5.0)


def test_location_forms_exclusions_and_url_normalisation(tmp_path) -> None:
    config, conf = _load(
        tmp_path,
        """\
ProxyPass /app/static !
ProxyPass /app HTTP://Back.Example/base/ retry=0 connectiontimeout=500ms acquire=250
<LocationMatch "^/api/v[12]/">
    ProxyPass ws://sock:9000/
</LocationMatch>
<Location ~ "^/re">
    ProxyPassMatch http://re:81
</Location>
<Location /ws>
    ProxyPass ws://sock:9000/ upgrade=ANY
    ProxyPassReverse ws://sock:9000/
</Location>
""",
    )
    routes = config.main.proxy.routes
    assert [(r.path, r.regex) for r in routes] == [
        ("/ws", False), ("^/re", True), ("^/api/v[12]/", True), ("/app/static", False),
        ("/app", False)]  # fmt: skip
    assert routes[3] == ProxyRoute("/app/static", False, None, None, f"{conf}:2")
    assert routes[4].member == _member(
        "http://back.example:80/base", f"{conf}:3", retry=0.0, connection_timeout=0.5,
        acquire=0.25)  # fmt: skip
    assert routes[2].member == _member("ws://sock:9000", f"{conf}:5", upgrade="websocket")
    assert routes[0].member.params.upgrade == "*"  # a second worker for the same URL is shared
    assert config.main.proxy.reverse == (ReverseRule("/ws", "ws://sock:9000/"),)


def test_balancer_parameters_from_proxy_pass_proxy_set_and_the_section(tmp_path) -> None:
    config, _ = _load(
        tmp_path,
        """\
BalancerMember balancer://Two http://b1:81 lbset=1 hcmethod=GET hcuri=/health hcinterval=500ms
<Proxy balancer://two/ maxattempts=3>
    BalancerMember ws://b2:82 redirect=x status=D-D+S
</Proxy>
ProxySet balancer://two stickysession=JSESSIONID|jsessionid stickysessionsep=Off nonce=None
ProxyPass /two balancer://two/sub lbmethod=bybusyness failonstatus=500,503 timeout=2 growth=5
ProxyStatus On
""",
    )
    (two,) = config.balancers
    assert two.name == "balancer://two"
    assert two.params == BalancerParams(
        lbmethod="bybusyness", sticky_cookie="JSESSIONID", sticky_param="jsessionid",
        sticky_separator="", maxattempts=3, timeout=2.0, failonstatus=frozenset({500, 503}),
        growth=5, nonce=None)  # fmt: skip
    b1, b2 = two.members
    assert (b1.params.lbset, b1.params.hcmethod, b1.params.hcuri, b1.params.hcinterval) == (
        1, "GET", "/health", 0.5)  # fmt: skip
    assert (b2.scheme, b2.params.status, b2.params.redirect, b2.params.upgrade) == (
        "ws", "S", "x", "websocket")  # fmt: skip
    assert config.main.proxy.routes[0].target == "balancer://two/sub"
    assert config.proxy_status is True


def test_health_check_templates_and_expressions(tmp_path) -> None:
    config, _ = _load(
        tmp_path,
        """\
ProxyHCExpr ok234 {%{REQUEST_STATUS} =~ /^[234]/}
ProxyHCExpr gdown {%{REQUEST_STATUS} =~ /^[5]/}
ProxyHCTemplate tpl hcmethod=GET hcinterval=2 hcpasses=2 hcexpr=ok234 hcuri=/up
<Proxy balancer://hc>
    BalancerMember http://a:81 hcinterval=10 hctemplate=tpl
    BalancerMember http://b:81 hctemplate=TPL hcexpr=GDOWN hcfails=3
</Proxy>
""",
    )
    assert config.hc_expressions == (
        ("ok234", "%{REQUEST_STATUS} =~ /^[234]/"), ("gdown", "%{REQUEST_STATUS} =~ /^[5]/"))  # fmt: skip
    a, b = config.balancers[0].members
    hc = lambda p: (p.hcmethod, p.hcinterval, p.hcpasses, p.hcfails, p.hcuri, p.hcexpr)  # noqa: E731
    assert hc(a.params) == ("GET", 10.0, 2, 1, "/up", "ok234")
    assert hc(b.params) == ("GET", 2.0, 2, 3, "/up", "gdown")


def test_shared_workers_warn_as_apache(tmp_path) -> None:
    config, conf = _load(
        tmp_path,
        """\
<Proxy balancer://c>
    BalancerMember http://a:81 route=1
    BalancerMember http://A:81/ route=2
</Proxy>
ProxyPass /x http://s:81
ProxyPass /y http://s:81 retry=5
""",
    )
    assert [m.params.route for m in config.balancers[0].members] == ["1"]
    assert config.warnings == (
        f"{conf}:4: AH01149: Sharing worker 'http://a:81' instead of creating new worker "
        "'http://A:81/'",
        f"{conf}:4: AH01150: Ignoring parameter 'route=2' for worker 'http://a:81' because of "
        "worker sharing",
        f"{conf}:7: AH01146: Ignoring parameter 'retry=5' for worker 'http://s:81' because of "
        "worker sharing",
    )
    x, y = config.main.proxy.routes
    assert x.member is y.member


def test_directives_in_proxy_sections_that_mpmd_does_not_apply_warn(tmp_path) -> None:
    config, conf = _load(
        tmp_path,
        """\
<Proxy *>
    Require all granted
</Proxy>
<Proxy balancer://c>
    BalancerMember http://a:81
    Require ip 10.0.0.0/8
</Proxy>
<Location /x>
    ProxyPreserveHost On
</Location>
""",
    )
    assert config.warnings == (
        f"{conf}:7: MP00101: Require inside <Proxy> is not applied by mpmd (only "
        "BalancerMember and ProxySet are); use <Location>",
        f"{conf}:10: MP00102: ProxyPreserveHost inside <Location> is not applied by mpmd; set "
        "it for the server or the virtual host",
    )
    assert config.main.proxy.preserve_host is False


@pytest.mark.parametrize(
    ("current", "text", "expected"),
    [("", "+H", "H"), ("", "D", "D"), ("", "dS", "DS"), ("DS", "-D", "S"), ("", "+H-D", "H"),
     ("H", "-HD", ""), ("", "+i+n+c+e+r", "IRENC")],
)  # fmt: skip
def test_status_flags(current, text, expected) -> None:
    assert apply_status(current, text) == expected


@pytest.mark.parametrize("text", ["+X", "O", "+", "H-"])
def test_status_flags_refused(text) -> None:
    with pytest.raises(DirectiveValueError, match=r"^Unknown status parameter option$"):
        apply_status("", text)


@pytest.mark.parametrize(
    ("text", "unit", "seconds"),
    [("5", "s", 5.0), ("5", "ms", 0.005), ("250ms", "s", 0.25), ("2mi", "s", 120.0),
     ("1h", "ms", 3600.0), ("x", "s", None), ("-1", "s", None), ("3m", "s", None)],
)  # fmt: skip
def test_time_values(text, unit, seconds) -> None:
    assert interval(text, unit) == seconds


def test_every_worker_parameter(tmp_path) -> None:
    config, _ = _load(
        tmp_path,
        """\
BalancerMember balancer://c http://a:81 loadfactor=2.5 lbset=99 route=r redirect=s retry=7 \\
    timeout=9 connectiontimeout=2 ping=100ms acquire=3s min=1 max=0 smax=4 ttl=60 \\
    keepalive=On disablereuse=On flushpackets=auto flushwait=20 iobuffersize=0 \\
    receivebuffersize=1024 status=N upgrade=websocket hcmethod=head11 hcpasses=0
""",
    )
    assert config.balancers[0].members[0].params == WorkerParams(
        loadfactor=250, lbset=99, route="r", redirect="s", retry=7.0, timeout=9.0,
        connection_timeout=2.0, ping=0.1, acquire=3.0, min=1, max=None, smax=4, ttl=60.0,
        keepalive=True, reuse=False, flushpackets="auto", flushwait=0.02, iobuffersize=8192,
        receivebuffersize=1024, status="N", upgrade="websocket", hcmethod="HEAD11", hcpasses=0)  # fmt: skip


def test_balancer_member_without_parameters_has_the_defaults(tmp_path) -> None:
    config, _ = _load(tmp_path, "BalancerMember balancer://c http://a\n")
    member = config.balancers[0].members[0]
    assert dataclasses.astuple(member)[:5] == ("http://a:80", "http", "a", 80, "")
    assert member.params == WorkerParams()


# -- through the real `mpmd -t` ----------------------------------------------------------------


def _mpmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mpmd", *args], capture_output=True, text=True,
                          timeout=30)  # fmt: skip


EVERY_DIRECTIVE = """\
LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so
LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so
LoadModule proxy_balancer_module /usr/lib/apache2/modules/mod_proxy_balancer.so
LoadModule lbmethod_byrequests_module /usr/lib/apache2/modules/mod_lbmethod_byrequests.so
LoadModule lbmethod_bytraffic_module /usr/lib/apache2/modules/mod_lbmethod_bytraffic.so
LoadModule lbmethod_bybusyness_module /usr/lib/apache2/modules/mod_lbmethod_bybusyness.so
LoadModule proxy_hcheck_module /usr/lib/apache2/modules/mod_proxy_hcheck.so
LoadModule proxy_wstunnel_module /usr/lib/apache2/modules/mod_proxy_wstunnel.so
LoadModule slotmem_shm_module /usr/lib/apache2/modules/mod_slotmem_shm.so
Listen 127.0.0.1:8080
ProxyRequests Off
ProxyVia On
ProxyStatus Full
ProxyTimeout 30
ProxyPreserveHost On
ProxyAddHeaders On
ProxyErrorOverride Off
ProxyHCExpr ok234 {%{REQUEST_STATUS} =~ /^[234]/}
ProxyHCTemplate tcp hcmethod=TCP hcinterval=5
<Proxy balancer://mycluster>
    BalancerMember http://127.0.0.1:8081 route=a hctemplate=tcp
    BalancerMember http://127.0.0.1:8082 route=b hcmethod=GET hcexpr=ok234 hcuri=/
    ProxySet lbmethod=bytraffic
</Proxy>
BalancerMember balancer://ws ws://127.0.0.1:8083
ProxySet balancer://ws lbmethod=bybusyness
<ProxyMatch "^http://127\\.0\\.0\\.1:8084/">
    Require all granted
</ProxyMatch>
ProxyPass /static !
ProxyPass /app balancer://mycluster stickysession=ROUTEID
ProxyPassReverse /app balancer://mycluster
ProxyPassMatch ^/one/(.*)$ http://127.0.0.1:8084/$1
<Location /sock>
    ProxyPass balancer://ws
</Location>
"""


def test_every_directive_passes_configtest_and_modules_are_listed(tmp_path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text(EVERY_DIRECTIVE)
    result = _mpmd("-t", "-f", str(conf))
    assert (result.returncode, result.stdout, result.stderr) == (0, "Syntax OK\n", "")
    modules = _mpmd("-M", "-f", str(conf)).stdout.splitlines()
    for name in ("proxy", "proxy_http", "proxy_balancer", "lbmethod_byrequests",
                 "lbmethod_bytraffic", "lbmethod_bybusyness", "proxy_hcheck", "proxy_wstunnel",
                 "slotmem_shm"):  # fmt: skip
        assert f" {name}_module (shared)" in modules
    assert " watchdog_module (static)" in modules


REFUSED = [
    ("ProxyPass /a https://h/", "ProxyPass https://h/: TLS to back ends is not supported by "
     "mpmd (it proxies to http:// and ws:// back ends)"),
    ("ProxyPass /a wss://h/", "ProxyPass wss://h/: TLS to back ends is not supported by mpmd "
     "(it proxies to http:// and ws:// back ends)"),
    ("BalancerMember balancer://c ajp://h:8009", "BalancerMember ajp://h:8009: the ajp:// scheme "
     "is not supported by mpmd (it proxies to http:// and ws:// back ends)"),
    ("ProxyPass /a /local", "ProxyPass URL must be absolute!: /local"),
    ("ProxyRequests On", "ProxyRequests On: mpmd is a reverse proxy only; forward proxying is "
     "not supported (use ProxyPass, and leave ProxyRequests Off)"),
    ("BalancerMember balancer://c http://h loadfactor=0",
     "BalancerMember LoadFactor must be a number between 1..100"),
    ("BalancerMember balancer://c http://h loadfactor=101",
     "BalancerMember LoadFactor must be a number between 1..100"),
    ("BalancerMember balancer://c http://h weight=2",
     "BalancerMember unknown Worker hcheck parameter"),
    ("BalancerMember balancer://c http://h status=+X",
     "BalancerMember Unknown status parameter option"),
    ("BalancerMember balancer://c http://h lbset=100", "BalancerMember lbset must be between 0 and 99"),
    ("BalancerMember balancer://c http://h retry=-1", "BalancerMember Retry must be a positive value"),
    ("BalancerMember balancer://c http://h timeout=0",
     "BalancerMember Timeout must be at least one second"),
    ("BalancerMember balancer://c http://h acquire=x",
     "BalancerMember Acquire timeout has wrong format"),
    ("BalancerMember balancer://c http://h hcinterval=50ms",
     "BalancerMember Interval must be a positive value greater than 100ms"),
    ("BalancerMember balancer://c http://h hcmethod=CPING",
     "BalancerMember Health check method CPING not (yet) implemented"),
    ("BalancerMember balancer://c http://h hcexpr=nope",
     "BalancerMember Unknown health check condition expr: nope"),
    ("BalancerMember balancer://c http://h hctemplate=nope",
     "BalancerMember Unknown ProxyHCTemplate name: nope"),
    ("BalancerMember http://h", "BalancerMember must define remote proxy server"),
    ("BalancerMember route=a", "BalancerMember must define balancer name when outside <Proxy > "
     "section"),
    ("@ProxyPass /a balancer://c foo=1\nBalancerMember balancer://c http://h",
     "ProxyPass unknown Balancer parameter"),
    ("ProxyPass /a balancer://nope", "ProxyPass can not find 'balancer://nope' Balancer. (no "
     "<Proxy> section or BalancerMember defines it)"),
    ("ProxySet balancer://nope lbmethod=bytraffic", "ProxySet can not find 'balancer://nope' "
     "Balancer."),
    ("<Proxy balancer://c>\nProxySet lbmethod=heartbeat\n</Proxy>",
     "ProxySet: lbmethod heartbeat is not implemented by mpmd (use byrequests, bytraffic or "
     "bybusyness) lbmethod=heartbeat; balancer://c"),
    ("<Proxy balancer://c>\nProxySet lbmethod=random\n</Proxy>",
     "ProxySet: unknown lbmethod lbmethod=random; balancer://c"),
    ("@<Proxy balancer://c stickysessionsep=ab>\n</Proxy>",
     "<Proxy stickysessionsep must be a single character or Off stickysessionsep=ab; "
     "balancer://c"),
    ("BalancerMember balancer://c http://h\nProxySet balancer://c failonstatus=700",
     "ProxySet: failonstatus must be one or more HTTP response codes failonstatus=700; "
     "balancer://c"),
    ("<Location /a>\nProxyPass /a http://h\n</Location>",
     "ProxyPass|ProxyPassMatch can not have a path when defined in a location."),
    ("<Directory /srv>\nProxyPass http://h\n</Directory>",
     "ProxyPass cannot occur within <Directory> section"),
    ("ProxyPass http://h", "ProxyPass|ProxyPassMatch needs a path when not defined in a location"),
    ("ProxyPass /a http://h retry", "Invalid ProxyPass|ProxyPassMatch parameter. Parameter must "
     "be in the form 'key=value'."),
    ("ProxyPassMatch ^/(a http://h", "Regular expression could not be compiled."),
    ("ProxyPassReverse /a", "ProxyPassReverse needs a path when not defined in a location"),
    ("ProxyTimeout 0", "Proxy Timeout must be at least 1 second."),
    ("ProxyHCTemplate t hcmethod=FOO", "ProxyHCTemplate: Unknown method hcmethod=FOO; t"),
    ("<Location /a>\n<Proxy balancer://c>\n</Proxy>\n</Location>",
     "<Proxy> cannot occur within <Location> section"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"), REFUSED, ids=[t.replace("@", "").split("\n")[0] for t, _ in REFUSED]
)
def test_configtest_refuses_with_file_and_line(tmp_path, text, message) -> None:
    conf = tmp_path / "httpd.conf"
    lines = text.split("\n")  # the line blamed: marked with @, else the last but a closer
    marked = [i for i, line in enumerate(lines) if line.startswith("@")]
    others = [i for i, line in enumerate(lines) if not line.startswith("</")]
    blamed = 2 + (marked[0] if marked else others[-1])
    conf.write_text("Listen 127.0.0.1:8080\n" + text.replace("@", "") + "\n")
    result = _mpmd("-t", "-f", str(conf))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"{conf}:{blamed}: {message}"]

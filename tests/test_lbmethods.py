"""Worker selection, sticky routes and failover (reference 7.4, 7.5) as exact sequences.

The lbmethods and sticky lookups are driven with plain objects; the BalancerRuntime tests use
a real ProxyState file in tmp_path. Times are passed explicitly: nothing sleeps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest

from mpmd.config.model import BackendMember, Balancer, BalancerParams, WorkerParams
from mpmd.handlers.proxy.balancer import BalancerRuntime, NoWorker
from mpmd.handlers.proxy.lbmethods import find_best, plain_byrequests, retry_worker
from mpmd.handlers.proxy.state import ERROR, INIT, ProxyState, flag_bits
from mpmd.handlers.proxy.sticky import cookie_param, find_session_route, path_param
from test_proxy_state import config_with, member


@dataclass(eq=False)
class W:
    """A worker as the lbmethods see it."""

    name: str
    lbfactor: int = 100
    status: int = INIT
    lbset: int = 0
    lbstatus: int = 0
    busy: int = 0
    transferred: int = 0
    read: int = 0
    error_time: float = 0.0
    retry: float = 60.0
    retries: int = 0
    route: str = ""
    redirect: str = ""


def workers(spec: str, **kw) -> list[W]:
    """`a:1 b:2 c:3` -> workers named a, b, c with loadfactors 1, 2, 3 (x100)."""
    out = []
    for item in spec.split():
        name, _, factor = item.partition(":")
        out.append(W(name, lbfactor=int(factor or 1) * 100, **kw))
    return out


def flags(*letters: str) -> int:
    return INIT | flag_bits("".join(letters))


def picks(method: str, ws: list[W], n: int, now: float = 1000.0) -> str:
    chosen = []
    for _ in range(n):
        w = find_best(method, ws, now)
        chosen.append(w.name if w else "-")
    return "".join(chosen)


# -- byrequests ---------------------------------------------------------------------------------


def test_byrequests_1_2_3_is_apaches_exact_period() -> None:
    # lbstatus starts at 0 (Apache's zeroed slotmem), factors 100/200/300; each pick adds the
    # factors (total 600), the highest lbstatus wins (the first on a tie) and pays 600:
    #   1: (100,200,300)  -> c  (100,200,-300)
    #   2: (200,400,0)    -> b  (200,-200,0)
    #   3: (300,0,300)    -> a (tie, first wins)  (-300,0,300)
    #   4: (-200,200,600) -> c  (-200,200,0)
    #   5: (-100,400,300) -> b  (-100,-200,300)
    #   6: (0,0,600)      -> c  (0,0,0): back to the start, period "cbacbc"
    # 10,000 = 1666 periods + "cbac": a 1666+1, b 3332+1, c 4998+2.
    ws = workers("a:1 b:2 c:3")
    run = picks("byrequests", ws, 10_000)
    assert run == ("cbacbc" * 1667)[:10_000]
    assert (run.count("a"), run.count("b"), run.count("c")) == (1667, 3333, 5000)
    assert [w.lbstatus for w in ws] == [-200, 200, 0]  # after "cbac", as step 4


def _numbers(ws: list[W]) -> list[tuple]:
    """The (status, lbfactor, lbset, lbstatus, ...) tuples the runtime reads from the state."""
    return [(w.status, w.lbfactor, w.lbset, w.lbstatus, w.busy, 0) for w in ws]


@pytest.mark.parametrize("seed", range(20))
def test_plain_byrequests_is_find_best_where_it_applies(seed) -> None:
    """The runtime's usual-case shortcut picks as find_best does, step after step, and
    declines (None) every configuration with a flag that matters, an lbset or no worker."""
    rng = random.Random(seed)
    ws = [W(str(i), lbfactor=rng.randint(1, 100) * 100) for i in range(rng.randint(1, 6))]
    for _ in range(200):
        before = _numbers(ws)
        plain = plain_byrequests(before)
        winner = find_best("byrequests", ws, 1000.0)
        assert plain is not None
        assert ws[plain[0]] is winner
        assert plain[1] == [w.lbstatus for w in ws]
    for letters in ("D", "S", "E", "C", "N", "H", "R"):
        odd = [W("a"), W("b", status=flags(letters))]
        assert plain_byrequests(_numbers(odd)) is None, letters
    assert plain_byrequests(_numbers([W("a"), W("b", lbset=1)])) is None
    assert plain_byrequests([]) is None
    assert plain_byrequests(_numbers([W("a", status=flags("I"))])) is not None


def test_byrequests_2_1_and_1_1() -> None:
    assert picks("byrequests", workers("a:2 b:1"), 9) == "abaabaaba"
    assert picks("byrequests", workers("a b"), 6) == "ababab"


def test_byrequests_skips_unusable_and_rebalances() -> None:
    ws = workers("a b c")
    ws[1].status = flags("D")
    assert picks("byrequests", ws, 4) == "acac"


# -- bybusyness, bytraffic -----------------------------------------------------------------------


def test_bybusyness_prefers_fewer_busy_then_lbstatus() -> None:
    ws = workers("a b c")
    ws[0].busy, ws[1].busy, ws[2].busy = 3, 1, 2
    assert find_best("bybusyness", ws, 0).name == "b"
    ws[1].busy = 2  # b and c tie on busy: the higher lbstatus (b paid 300 last time) loses
    assert find_best("bybusyness", ws, 0).name == "c"
    for w in ws:
        w.busy = 0
    assert picks("bybusyness", workers("a:2 b:1"), 6) == "abaaba"


def test_bytraffic_lowest_normalised_traffic_wins() -> None:
    ws = workers("a:1 b:1 c:3")
    ws[0].transferred, ws[0].read = 500, 500  # 10
    ws[1].transferred, ws[1].read = 100, 200  # 1 + 2 = 3
    ws[2].transferred, ws[2].read = 600, 900  # 2 + 3 = 5
    assert find_best("bytraffic", ws, 0).name == "b"
    ws[1].read = 1000  # b: 1 + 10 = 11
    assert find_best("bytraffic", ws, 0).name == "c"
    assert find_best("bytraffic", workers("a b"), 0).name == "a"  # ties: the first


# -- the driver: lbsets, standbys, spares, draining, retry ---------------------------------------


def test_lbset_tiers() -> None:
    ws = workers("a b c")
    ws[0].lbset = 1
    assert picks("byrequests", ws, 4) == "bcbc"
    ws[1].status = ws[2].status = flags("E")
    ws[1].error_time = ws[2].error_time = 990.0
    assert picks("byrequests", ws, 2) == "aa"


def test_hot_standby_only_when_every_normal_member_is_down() -> None:
    ws = workers("a b s")
    ws[2].status = flags("H")
    assert "s" not in picks("byrequests", ws, 10)
    ws[0].status = flags("D")
    assert picks("byrequests", ws, 3) == "bbb"
    ws[1].status = flags("S")
    assert picks("byrequests", ws, 3) == "sss"


def test_spare_replaces_one_unusable_member() -> None:
    ws = workers("a b x y")
    ws[2].status = ws[3].status = flags("R")
    assert set(picks("byrequests", ws, 10)) == {"a", "b"}
    ws[0].status = flags("D")  # one member down: exactly one spare (the first) steps in
    assert set(picks("byrequests", ws, 10)) == {"b", "x"}
    ws[1].status = flags("D")  # both down: both spares
    assert set(picks("byrequests", ws, 10)) == {"x", "y"}


def test_draining_member_gets_no_new_work_and_counts_as_unusable() -> None:
    ws = workers("a b r")
    ws[0].status = flags("N")
    ws[2].status = flags("R")
    assert set(picks("byrequests", ws, 6)) == {"b", "r"}


def test_retry_after_retry_seconds_with_explicit_now() -> None:
    ws = workers("a b")
    ws[0].status, ws[0].error_time, ws[0].retry = flags("E"), 100.0, 60.0
    assert picks("byrequests", ws, 2, now=160.0) == "bb"  # not after: now must pass 160
    assert ws[0].status & ERROR
    assert find_best("byrequests", ws, 160.5) is not None
    assert not ws[0].status & ERROR and ws[0].retries == 1


def test_flag_i_is_retried_at_once_and_s_never() -> None:
    w = W("a", status=flags("E", "I"), error_time=100.0)
    assert retry_worker(w, 100.0) and not w.status & ERROR
    s = W("b", status=flags("E", "S"), error_time=0.0, retry=0.0)
    assert not retry_worker(s, 1e9) and s.status & ERROR


# -- sticky lookups --------------------------------------------------------------------------------


def test_path_param() -> None:
    assert path_param("/app?JSESSIONID=abc.r1&x=1", "JSESSIONID", False) == "abc.r1"
    assert path_param("/app;jsessionid=abc.r1?x", "jsessionid", False) == "abc.r1"
    assert path_param("/app;jsessionid=abc.r1;x=2", "jsessionid", False) == "abc.r1;x=2"
    assert path_param("/app;jsessionid=abc.r1;x=2", "jsessionid", True) == "abc.r1"
    assert path_param("/app?jsessionid=", "jsessionid", False) is None
    assert path_param("/app?jsessionid=&x", "jsessionid", False) == "x"  # apr_strtok


def test_cookie_param() -> None:
    assert cookie_param("ROUTEID=.b; other=1", "ROUTEID") == ".b"
    assert cookie_param("a=1;ROUTEID =x.b,c=2", "ROUTEID") == "x.b"
    assert cookie_param("ROUTEID= x.b", "ROUTEID") == " x.b"  # as Apache: no strip after =
    assert cookie_param("XROUTEID=x.a; ROUTEID=y.b", "ROUTEID") == "y.b"
    assert cookie_param("XROUTEID=x.a", "ROUTEID") is None
    assert cookie_param("ROUTEID=", "ROUTEID") is None
    assert cookie_param(None, "ROUTEID") is None


def sticky(ws, url="/", cookie=None, sep=".", scolon=False, now=1000.0):
    return find_session_route(
        ws, url, cookie, sticky_cookie="ROUTEID", sticky_param="ROUTEID",
        separator=sep, scolonpathdelim=scolon, now=now,
    )  # fmt: skip


def test_sticky_by_cookie_url_param_and_separator_off() -> None:
    ws = workers("a b")
    ws[0].route, ws[1].route = "r1", "r2"
    assert sticky(ws, cookie="ROUTEID=xyz.r2").worker is ws[1]
    assert sticky(ws, url="/p?ROUTEID=s.r1", cookie="ROUTEID=xyz.r2").worker is ws[0]
    found = sticky(ws, url="/p;ROUTEID=s.r1;v=1", scolon=True)
    assert found.worker is ws[0] and found.route == "r1" and found.sticky_used == "ROUTEID"
    assert sticky(ws, cookie="ROUTEID=r2", sep="").worker is ws[1]
    assert sticky(ws, cookie="ROUTEID=r2").route is None  # no separator in the value
    assert sticky(ws, cookie="ROUTEID=x.r9").worker is None


def test_sticky_redirect_chain_and_standby() -> None:
    ws = workers("a b c s")
    for w, route in zip(ws, ("r1", "r2", "r3", "r1"), strict=True):
        w.route = route
    ws[3].status = flags("H")
    ws[0].status, ws[0].redirect = flags("D"), "r2"
    ws[1].status, ws[1].redirect = flags("D"), "r3"
    found = sticky(ws, cookie="ROUTEID=x.r1")
    assert found.worker is ws[2] and found.changed
    ws[0].redirect = ""  # no redirect: the standby with the same route
    assert sticky(ws, cookie="ROUTEID=x.r1").worker is ws[3]


# -- BalancerRuntime over a real state file ----------------------------------------------------------


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str | None, str]] = []

    def log(self, level, message, *, module="core", ah=None, **kw) -> None:
        self.lines.append((level, ah, message))


def runtime(tmp_path, members, **params):
    bal = Balancer("balancer://c", tuple(members), BalancerParams(**params), "t:1")
    state = ProxyState.create(str(tmp_path / "proxy"), config_with(bal))
    log = Log()
    return BalancerRuntime(bal, state, log), state, log


def test_runtime_env_sticky_and_nofailover(tmp_path) -> None:
    ms = [member(1, route="r1"), member(2, route="r2")]
    rt, state, log = runtime(tmp_path, ms, sticky_cookie="ROUTEID", sticky_param="ROUTEID")
    choice = rt.choose("/x", "ROUTEID=abc.r2", 0.0)
    assert choice.member is ms[1] and choice.sticky_route == "r2"
    assert choice.env == {
        "BALANCER_NAME": "balancer://c",
        "BALANCER_WORKER_NAME": ms[1].url,
        "BALANCER_WORKER_ROUTE": "r2",
        "BALANCER_SESSION_STICKY": "ROUTEID",
        "BALANCER_SESSION_ROUTE": "r2",
    }
    assert [state.worker("balancer://c", m.url).lbstatus for m in ms] == [100, -100]
    rt.failed(choice, 10.0)
    assert log.lines[-1] == (
        "error", "AH00959",
        "ap_proxy_connect_backend disabling worker for (127.0.0.1:8002) for 60s",
    )  # fmt: skip
    moved = rt.choose("/x", "ROUTEID=abc.r2", 20.0)
    assert moved.member is ms[0] and moved.env["BALANCER_ROUTE_CHANGED"] == "1"
    state.balancer("balancer://c").nofailover = 1
    with pytest.raises(NoWorker) as err:
        rt.choose("/x", "ROUTEID=abc.r2", 30.0)
    assert err.value.status == 503
    assert err.value.message == (
        "AH01167: balancer://c: All workers are in error state for route (r2)"
    )
    assert rt.choose("/x", "ROUTEID=abc.r2", 71.0).member is ms[1]  # retried after 60 s
    state.close()


def test_runtime_all_in_error_forcerecovery_and_no_workers(tmp_path) -> None:
    ms = [member(1), member(2)]
    rt, state, log = runtime(tmp_path, ms)
    assert rt.max_attempts == 1 and rt.timeout == 0.0
    for _ in ms:
        choice = rt.choose("/", None, 0.0)
        rt.failed(choice, 5.0)
    assert choice.member is ms[1]
    # every worker in error, none due for a retry: forcerecovery clears them all
    assert rt.choose("/", None, 6.0).member in ms
    assert [lvl for lvl, ah, _ in log.lines if ah == "AH01165"] == ["debug", "debug"]
    state.close()
    rt, state, log = runtime(tmp_path, ms, forcerecovery=False)
    for _ in ms:
        rt.failed(rt.choose("/", None, 0.0), 5.0)
    with pytest.raises(NoWorker) as err:
        rt.choose("/", None, 6.0)
    assert err.value.message == "AH01170: balancer://c: All workers are in error state"
    state.close()
    rt, state, _log = runtime(tmp_path, [])
    with pytest.raises(NoWorker) as err:
        rt.choose("/", None, 0.0)
    assert err.value.ah == "AH01171"
    state.close()


def test_runtime_failonstatus_failontimeout_and_flag_i(tmp_path) -> None:
    ignored = replace(member(2), params=WorkerParams(status="I"))
    rt, state, log = runtime(
        tmp_path, [member(1), ignored], failonstatus=frozenset({502}), failontimeout=True
    )
    first = rt.choose("/", None, 0.0)
    assert not rt.after_response(first, 200, False)
    assert rt.after_response(first, 502, True)
    assert [ah for _, ah, _ in log.lines] == ["AH01174", "AH02460"]
    assert first.slot.has_flag("E") and first.slot.status_text == "Init Err "
    second = rt.choose("/", None, 1.0)
    assert second.member is ignored
    assert not rt.after_response(second, 502, True)
    rt.failed(second, 2.0)
    assert second.slot.usable and second.slot.status_text == "Init Ign Ok "
    state.close()


def test_runtime_lbmethod_switch_resets_counters(tmp_path) -> None:
    rt, state, _log = runtime(tmp_path, [member(1), member(2)])
    choice = rt.choose("/", None, 0.0)
    rt.finished(choice, 10, 20)
    bal = state.balancer("balancer://c")
    bal.lbmethod, bal.need_reset = "bytraffic", 1
    bal.touch()
    assert rt.choose("/", None, 0.0).member.port == 8001  # counted: elected 2, 1 in flight
    assert (choice.slot.transferred, choice.slot.read) == (0, 0)
    assert choice.slot.elected == 2 and choice.slot.busy == 1
    state.close()


def test_member_helper_matches_model() -> None:
    assert isinstance(member(1), BackendMember)

"""WebSocket conformance cases in the spirit of the Autobahn testsuite.

Each case is what a raw client sends (masked frames, sent step by step) and what an echo
application behind the server must answer: the frames after each step (echoed messages, pongs)
and the close code that ends the connection, after which the server closes TCP. The same table
runs in process against WebSocketCycle (tests/test_websocket_cycle.py) and end to end against a
real server over a socket with `run_case(case, send, recv)` (tests/websocket_client.py, re-exported
here). The ids follow Autobahn's groups: 1 framing, 2 pings, 3 reserved bits, 4 opcodes,
5 fragmentation, 6 UTF-8, 7 close, 9 limits, 12/13 permessage-deflate.
"""

from __future__ import annotations

import random
import struct

from tests.websocket_client import (
    BINARY,
    CLOSE,
    CONT,
    NO_CODE,
    PING,
    PONG,
    TEXT,
    Case,
    Step,
    close,
    deflated,
    frame,
    new_compressor,
    run_case,
    text,
)

__all__ = ["Case", "Step", "cases", "run_case"]


def _echo(case_id: str, description: str, *messages: tuple[int, bytes], chop: int = 0) -> Case:
    sent = b"".join(frame(op, data) for op, data in messages)
    return Case(case_id, description, (Step(sent, messages),), chop=chop)


def _fail(
    case_id: str,
    description: str,
    data: bytes,
    code: int = 1002,
    before: bool = False,
    chop: int = 0,
) -> Case:
    """The server must close with `code` (after echoing a first message when `before`)."""
    steps = (Step(text("before"), ((TEXT, b"before"),)),) if before else ()
    return Case(case_id, description, (*steps, Step(data)), close=code, chop=chop)


def _framing() -> list[Case]:
    cases = []
    for i, n in enumerate((0, 125, 126, 127, 128, 65535, 65536), 1):
        cases.append(_echo(f"1.1.{i}", f"text, {n} bytes", (TEXT, b"*" * n)))
        cases.append(_echo(f"1.2.{i}", f"binary, {n} bytes", (BINARY, b"\xfe" * n)))
    cases.append(
        _echo("1.1.8", "text, 65536 bytes in 997-byte chops", (TEXT, b"*" * 65536), chop=997)
    )
    cases.append(
        _echo("1.2.8", "binary, 65536 bytes in 997-byte chops", (BINARY, b"\xfe" * 65536), chop=997)
    )
    return cases


def _pings() -> list[Case]:
    pong = lambda data: (PONG, data)  # noqa: E731
    return [
        Case("2.1", "ping, no payload", (Step(frame(PING), (pong(b""),)),)),
        Case(
            "2.2",
            "ping, text payload",
            (Step(frame(PING, b"Hello, world!"), (pong(b"Hello, world!"),)),),
        ),
        Case(
            "2.3",
            "ping, binary payload",
            (Step(frame(PING, b"\x00\xff\xfe\xfd"), (pong(b"\x00\xff\xfe\xfd"),)),),
        ),
        Case("2.4", "ping, 125 bytes", (Step(frame(PING, b"\xfe" * 125), (pong(b"\xfe" * 125),)),)),
        _fail("2.5", "ping, 126 bytes", frame(PING, b"\xfe" * 126)),
        Case(
            "2.6",
            "ping, 125 bytes sent a byte at a time",
            (Step(frame(PING, b"\xfe" * 125), (pong(b"\xfe" * 125),)),),
            chop=1,
        ),
        Case("2.7", "unsolicited pong, no payload", (Step(frame(PONG)),)),
        Case("2.8", "unsolicited pong with payload", (Step(frame(PONG, b"unsolicited")),)),
        Case(
            "2.9",
            "unsolicited pong, then ping",
            (Step(frame(PONG, b"x") + frame(PING, b"y"), (pong(b"y"),)),),
        ),
        Case(
            "2.10",
            "10 pings",
            (
                Step(
                    b"".join(frame(PING, b"%d" % i) for i in range(10)),
                    tuple(pong(b"%d" % i) for i in range(10)),
                ),
            ),
        ),
        Case(
            "2.11",
            "10 pings, chopped",
            (
                Step(
                    b"".join(frame(PING, b"%d" % i) for i in range(10)),
                    tuple(pong(b"%d" % i) for i in range(10)),
                ),
            ),
            chop=3,
        ),
    ]


def _reserved_bits() -> list[Case]:
    return [
        _fail("3.1", "text with RSV=1 (RSV3)", text("hello", rsv=1)),
        _fail(
            "3.2",
            "echo, then text with RSV=2 and a ping",
            text("hello", rsv=2) + frame(PING),
            before=True,
        ),
        _fail(
            "3.3",
            "echo, then text with RSV=3 and a ping, chopped",
            text("hello", rsv=3) + frame(PING),
            before=True,
            chop=1,
        ),
        _fail("3.4", "text with RSV=4 (RSV1, no deflate negotiated)", text("hello", rsv=4)),
        _fail("3.5", "binary with RSV=5", frame(BINARY, b"\x00\xff", rsv=5)),
        _fail("3.6", "ping with RSV=6", frame(PING, b"ping", rsv=6)),
        _fail("3.7", "close with RSV=7", frame(CLOSE, struct.pack("!H", 1000), rsv=7)),
    ]


def _opcodes() -> list[Case]:
    cases = []
    for i, op in enumerate((3, 4, 5, 6, 7), 1):
        cases.append(_fail(f"4.1.{i}", f"reserved data opcode {op}", frame(op, b"data")))
        cases.append(_fail(f"4.2.{i}", f"reserved control opcode {op + 8}", frame(op + 8, b"ctl")))
    cases.append(
        _fail("4.1.6", "echo, then opcode 5 and a ping", frame(5) + frame(PING), before=True)
    )
    cases.append(
        _fail("4.2.6", "echo, then opcode 13 and a ping", frame(13) + frame(PING), before=True)
    )
    return cases


def _fragmentation() -> list[Case]:
    frag1, frag2 = text("frag1", fin=False), frame(CONT, b"frag2")
    return [
        _fail("5.1", "ping in two fragments", frame(PING, b"a", fin=False) + frame(CONT, b"b")),
        _fail("5.2", "pong in two fragments", frame(PONG, b"a", fin=False) + frame(CONT, b"b")),
        _echo_steps("5.3", "text in two fragments", Step(frag1 + frag2, ((TEXT, b"frag1frag2"),))),
        _echo_steps(
            "5.4",
            "text in two fragments, chopped",
            Step(frag1 + frag2, ((TEXT, b"frag1frag2"),)),
            chop=1,
        ),
        _echo_steps(
            "5.5",
            "binary in three fragments",
            Step(
                frame(BINARY, b"\x01", fin=False)
                + frame(CONT, b"\x02", fin=False)
                + frame(CONT, b"\x03"),
                ((BINARY, b"\x01\x02\x03"),),
            ),
        ),
        _echo_steps(
            "5.6",
            "text fragments with a ping between",
            Step(frag1 + frame(PING, b"p") + frag2, ((PONG, b"p"), (TEXT, b"frag1frag2"))),
        ),
        _echo_steps(
            "5.7",
            "text fragments with a ping between, in steps",
            Step(frag1 + frame(PING, b"p"), ((PONG, b"p"),)),
            Step(frag2, ((TEXT, b"frag1frag2"),)),
        ),
        _echo_steps(
            "5.8",
            "text fragments with a pong between",
            Step(frag1 + frame(PONG, b"p") + frag2, ((TEXT, b"frag1frag2"),)),
        ),
        _fail("5.9", "continuation (fin) with nothing to continue", frame(CONT, b"x")),
        _fail(
            "5.10", "continuation (no fin) with nothing to continue", frame(CONT, b"x", fin=False)
        ),
        _fail(
            "5.11",
            "stray continuations then a text",
            frame(CONT, b"x", fin=False) + frame(CONT, b"y") + text("z"),
        ),
        _fail("5.15", "a message, then a stray continuation", frame(CONT, b"frag3"), before=True),
        _fail("5.17", "a new text frame while a message is unfinished", frag1 + text("again")),
        _fail(
            "5.18", "a binary frame while a text message is unfinished", frag1 + frame(BINARY, b"x")
        ),
        _echo_steps("5.19", "five fragments with pings between, in steps", *_pinged_fragments()),
        _echo_steps(
            "5.20",
            "empty fragments",
            Step(
                text(b"", fin=False) + frame(CONT, b"", fin=False) + frame(CONT, b""),
                ((TEXT, b""),),
            ),
        ),
    ]


def _pinged_fragments() -> list[Step]:
    steps = []
    for i in range(5):
        fragment = frame(TEXT if i == 0 else CONT, b"%d" % i, fin=i == 4) + frame(PING, b"p%d" % i)
        echoed = ((TEXT, b"01234"),) if i == 4 else ()
        steps.append(Step(fragment, ((PONG, b"p%d" % i), *echoed)))
    return steps


def _echo_steps(case_id: str, description: str, *steps: Step, chop: int = 0) -> Case:
    return Case(case_id, description, steps, chop=chop)


_VALID_UTF8 = [
    "Hello-µ@ßöäüàá-UTF-8!!".encode(),
    "κόσμε".encode(),
    b"\xc2\x80",
    b"\xdf\xbf",
    b"\xe0\xa0\x80",
    b"\xef\xbf\xbf",
    b"\xf0\x90\x80\x80",
    b"\xf4\x8f\xbf\xbf",
    b"\xef\xbb\xbf",
    b"\xef\xbf\xbe",
]
_INVALID_UTF8 = [
    "κόσμε".encode() + b"\xed\xa0\x80edited",  # 6.3.1: a surrogate
    b"\x80",
    b"\xbf",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",
    b"\xf8\x88\x80\x80\x80",
    b"\xf4\x90\x80\x80",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xfe",
    b"\xff",
    b"\xc2",  # truncated at the message's end
    "κόσμε".encode() + b"\xce",
]


def _utf8() -> list[Case]:
    cases = []
    for i, data in enumerate(_VALID_UTF8, 1):
        cases.append(_echo(f"6.1.{i}", f"valid UTF-8 {data[:12]!r}", (TEXT, data)))
        frames = b"".join(
            frame(TEXT if j == 0 else CONT, data[j : j + 1], fin=j == len(data) - 1)
            for j in range(len(data))
        )
        cases.append(
            Case(
                f"6.2.{i}",
                f"valid UTF-8 {data[:12]!r}, one byte per fragment",
                (Step(frames, ((TEXT, data),)),),
            )
        )
    for i, data in enumerate(_INVALID_UTF8, 1):
        cases.append(_fail(f"6.3.{i}", f"invalid UTF-8 {data[:12]!r}", text(data), code=1007))
        if len(data) > 1:
            split = frame(TEXT, data[:1], fin=False) + frame(CONT, data[1:])
            cases.append(
                _fail(f"6.5.{i}", f"invalid UTF-8 {data[:12]!r} across fragments", split, code=1007)
            )
    bad = "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"-never-sent"
    cases.append(
        _fail(
            "6.4.1",
            "fail fast: invalid UTF-8 in a first fragment, no more sent",
            text(bad[:14], fin=False),
            code=1007,
        )
    )
    whole = text(bad + b"x" * 1000)
    cases.append(
        _fail(
            "6.4.2",
            "fail fast: invalid UTF-8 in the first part of a frame, the rest never sent",
            whole[: 2 + 2 + 4 + 14],
            code=1007,
        )
    )
    return cases


def _close() -> list[Case]:
    cases = [
        _echo_steps(
            "7.1.1",
            "echo, then close",
            Step(text("Hello World!"), ((TEXT, b"Hello World!"),)),
            Step(close(1000)),
        ),
        Case("7.1.2", "close twice", (Step(close(1000) + close(1000)),), close=1000),
        Case(
            "7.1.3",
            "close, then a ping (unanswered)",
            (Step(close(1000) + frame(PING, b"x")),),
            close=1000,
        ),
        Case(
            "7.1.4", "close, then a text (not echoed)", (Step(close(1000) + text("x")),), close=1000
        ),
        Case(
            "7.1.5",
            "fragment, close, fragment",
            (Step(text("frag1", fin=False) + close(1000) + frame(CONT, b"frag2")),),
            close=1000,
        ),
        Case("7.3.1", "close, empty payload", (Step(close()),), close=NO_CODE),
        _fail("7.3.2", "close, 1-byte payload", frame(CLOSE, b"\x03")),
        Case("7.3.3", "close 1000, no reason", (Step(close(1000)),), close=1000),
        Case(
            "7.3.4", "close 1000 with a reason", (Step(close(1000, b"Hello World!")),), close=1000
        ),
        Case(
            "7.3.5",
            "close 1000 with a 123-byte reason",
            (Step(close(1000, b"*" * 123)),),
            close=1000,
        ),
        _fail("7.3.6", "close 1000 with a 124-byte reason", close(1000, b"*" * 124)),
        _fail(
            "7.5.1",
            "close reason with invalid UTF-8",
            close(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"),
            code=1007,
        ),
    ]
    for i, code in enumerate(
        (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999), 1
    ):
        cases.append(
            Case(f"7.7.{i}", f"close with valid code {code}", (Step(close(code)),), close=code)
        )
    for i, code in enumerate((0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535), 1):
        cases.append(_fail(f"7.9.{i}", f"close with invalid code {code}", close(code)))
    return cases


def _limits(max_size: int) -> list[Case]:
    quarter = max_size // 4
    over = frame(BINARY, b"\x00" * (2 * max_size))
    return [
        _echo("9.1.1", f"text of the maximum size ({max_size} bytes)", (TEXT, b"*" * max_size)),
        _echo("9.2.1", "binary of the maximum size", (BINARY, b"\xfe" * max_size)),
        _fail("9.1.2", "text one byte over the maximum", text(b"*" * (max_size + 1)), code=1009),
        _fail(
            "9.2.2",
            "binary one byte over the maximum",
            frame(BINARY, b"\xfe" * (max_size + 1)),
            code=1009,
        ),
        Case(
            "9.3.1",
            "text of the maximum size in four fragments",
            (
                Step(
                    b"".join(
                        frame(TEXT if i == 0 else CONT, b"*" * quarter, fin=i == 3)
                        for i in range(4)
                    ),
                    ((TEXT, b"*" * (4 * quarter)),),
                ),
            ),
        ),
        _fail(
            "9.3.2",
            "fragments adding up to one byte over the maximum",
            b"".join(frame(TEXT if i == 0 else CONT, b"*" * quarter, fin=False) for i in range(4))
            + frame(CONT, b"*"),
            code=1009,
        ),
        _fail(
            "9.4.1",
            "a frame announcing twice the maximum, refused before it is all sent",
            over[: 14 + max_size + 1],
            code=1009,
        ),
        Case(
            "9.5.1",
            "binary of the maximum size in 65536-byte chops",
            (Step(frame(BINARY, b"\xfe" * max_size), ((BINARY, b"\xfe" * max_size),)),),
            chop=65536,
        ),
        Case(
            "9.7.1",
            "100 small text messages",
            (
                Step(
                    b"".join(text(b"m%d" % i) for i in range(100)),
                    tuple((TEXT, b"m%d" % i) for i in range(100)),
                ),
            ),
        ),
        Case(
            "9.8.1",
            "a deflated message inflating over the maximum",
            (Step(deflated(BINARY, b"\x00" * (max_size + 1), new_compressor())),),
            close=1009,
            offer="permessage-deflate",
            answer={},
        ),
    ]


def _data_sets() -> list[tuple[int, bytes]]:
    rng = random.Random(6455)
    words = b"the quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet "
    sets = []
    for n in (16, 64, 256, 1024, 4096, 65536, 131072):
        sets.append((TEXT, (words * (n // len(words) + 1))[:n]))
        sets.append((BINARY, rng.randbytes(n)))
    return sets


def _deflate() -> list[Case]:
    cases = []
    for i, (op, data) in enumerate(_data_sets(), 1):
        compressor = new_compressor()
        sent = deflated(op, data, compressor) + deflated(op, data, compressor)  # context kept
        cases.append(
            Case(
                f"12.1.{i}",
                f"deflated {'text' if op == TEXT else 'binary'} x2, {len(data)} bytes",
                (Step(sent, ((op, data), (op, data))),),
                offer="permessage-deflate",
                answer={},
            )
        )
        fragmented = deflated(op, data, new_compressor(), fragment=97)
        cases.append(
            Case(
                f"12.2.{i}",
                f"deflated, 97-byte fragments, {len(data)} bytes",
                (Step(fragmented, ((op, data),)),),
                offer="permessage-deflate",
                answer={},
            )
        )
    data = _data_sets()[6][1]
    offers = [
        ("permessage-deflate; client_no_context_takeover", {"client_no_context_takeover": None}),
        ("permessage-deflate; server_no_context_takeover", {"server_no_context_takeover": None}),
        ("permessage-deflate; client_max_window_bits", {"client_max_window_bits": "12"}),
        ("permessage-deflate; client_max_window_bits=9", {"client_max_window_bits": "9"}),
        ("permessage-deflate; server_max_window_bits=9", {"server_max_window_bits": "9"}),
        ("permessage-deflate; server_max_window_bits=15", {"server_max_window_bits": "12"}),
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate", {}),
        (
            "permessage-deflate; unknown_param, permessage-deflate; client_no_context_takeover",
            {"client_no_context_takeover": None},
        ),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
        ("x-webkit-deflate-frame", None),
    ]
    for i, (offer, answer) in enumerate(offers, 1):
        if answer is None:
            steps = (Step(text(data), ((TEXT, data),)),)
        else:
            sent = deflated(TEXT, data, new_compressor()) + deflated(TEXT, data, new_compressor())
            steps = (Step(sent, ((TEXT, data), (TEXT, data))),)
        cases.append(Case(f"13.{i}", f"offer {offer!r}", steps, offer=offer, answer=answer))
    return cases


def cases(max_message_size: int = 16 * 1024 * 1024) -> list[Case]:
    """The whole table; group 9 is sized from the server's maximum message size."""
    table = [*_framing(), *_pings(), *_reserved_bits(), *_opcodes(), *_fragmentation()]
    table += [*_utf8(), *_close(), *_limits(max_message_size), *_deflate()]
    return table

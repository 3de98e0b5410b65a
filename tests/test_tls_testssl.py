"""testssl.sh against mpmd's default TLS settings (issue 13's acceptance).

mpmd (worker, and event, whose loop drives the handshake) is started with only SSLEngine,
SSLCertificateFile and SSLCertificateKeyFile (an RSA certificate from trustme, whose CA testssl
is given with --add-ca); testssl.sh (Debian package testssl.sh) probes 127.0.0.1 only: the
target is an address, `--ip` pins it and `--nodns none` forbids DNS lookups, and it never
phones out unless told to. From its JSON: no protocol below TLS 1.2 is offered, and every
vulnerability check and cipher category is OK. The findings on the certificate itself
(trustme's 1000-year validity, no CRL/OCSP URI) are about the test CA, not mpmd, and are not
asserted. The summary lines are printed (`pytest -s` shows them); the measured result is in
docs/tls.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from server import Server

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
trustme = pytest.importorskip("trustme", reason="trustme (the test extra) is not installed")

BELOW_TLS12 = ("SSLv2", "SSLv3", "TLS1", "TLS1_1")
# testssl 3.0's ids for the checks of --vulnerable (ROBOT is "OK" when no RSA key transport
# cipher is offered; secure_renego "OK" means RFC 5746 renegotiation is supported).
VULNERABILITIES = (
    "heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego",
    "CRIME_TLS", "BREACH", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN",
    "LOGJAM", "BEAST", "LUCKY13", "RC4",
)  # fmt: skip
GOOD = {"OK", "INFO"}
# The summary: protocols, cipher categories, forward secrecy, vulnerabilities and, from
# testssl 3.1 on, its rating (3.0.8, Debian 12's, has no overall grade).
SUMMARY_PREFIXES = ("SSLv", "TLS1", "cipherlist_", "PFS", "overall_grade", "final_score",
                    *VULNERABILITIES)  # fmt: skip


def _testssl_command(port: int, ca: str, json_file: str) -> list[str]:
    return [
        TESTSSL, "--quiet", "--color", "0", "--warnings", "off",
        "--ip", "127.0.0.1", "--nodns", "none", "--add-ca", ca, "--jsonfile", json_file,
        "--connect-timeout", "10", "--openssl-timeout", "10",
        "--protocols", "--std", "--fs", "--server-defaults", "--vulnerable",
        f"127.0.0.1:{port}",
    ]  # fmt: skip


def summary_lines(findings: list[dict]) -> list[str]:
    """The findings that grade the server's TLS, one `id severity finding` line each."""
    return [
        f"{f['id']:<22} {f['severity']:<8} {f['finding']}"
        for f in findings
        if f["id"].startswith(SUMMARY_PREFIXES) and not f["id"].startswith("TLS_")
    ]


@pytest.mark.slow
@pytest.mark.skipif(TESTSSL is None, reason="testssl.sh is not installed (Debian: testssl.sh)")
@pytest.mark.parametrize("mpm", ["worker", "event"])  # blocking SSLSocket / the loop's SSLObject
def test_testssl_finds_nothing_in_the_defaults(tmp_path, mpm) -> None:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.RSA)
    crt, key, ca_file = tmp_path / "srv.crt", tmp_path / "srv.key", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(crt))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    config = f"SSLEngine on\nSSLCertificateFile {crt}\nSSLCertificateKeyFile {key}\n"
    report = tmp_path / "testssl.json"
    with Server(tmp_path, config, mpm=mpm) as server:
        cmd = _testssl_command(server.port, str(ca_file), str(report))
        proc = subprocess.run(
            cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
        )
    assert report.exists(), f"testssl wrote no JSON (exit {proc.returncode}): {proc.stdout}"
    findings = json.loads(report.read_text())
    by_id = {f["id"]: f for f in findings}
    lines = summary_lines(findings)
    print("\n" + " ".join([*cmd[:-1], "127.0.0.1:PORT"]), *lines, sep="\n")
    for proto in BELOW_TLS12:
        assert by_id[proto]["finding"].startswith("not offered"), by_id[proto]
    assert by_id["TLS1_2"]["finding"].startswith("offered")
    assert by_id["TLS1_3"]["finding"].startswith("offered")
    bad = [by_id.get(v, {"id": v, "severity": "missing"}) for v in VULNERABILITIES]
    bad = [f for f in bad if f["severity"] not in GOOD]
    bad += [f for f in findings if f["id"].startswith("cipherlist_") and f["severity"] not in GOOD]
    assert not bad, "\n".join(lines)

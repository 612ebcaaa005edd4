"""TLS with client certificates and etcd authentication, end to end, on a real etcd.

The module starts its own etcd member on ``https://127.0.0.1`` with
``--client-cert-auth``, creates the role recipe from docs/operations.md (a
``dispatch-worker`` role with readwrite on the namespace prefix, a ``worker`` user with
that role, ``auth enable``), and shows that:

- a ``dispatch-worker`` process given ``--etcd-ca/--etcd-cert/--etcd-key``,
  ``--etcd-user`` and the password through ``DISPATCH_ETCD_PASSWORD`` makes decisions;
- ``dispatchctl`` with a wrong password, a wrong CA, no client certificate, or a user
  without a grant on the namespace fails in one line with a non-zero exit;
- the password never reaches the worker's log.

Certificates are made with the ``cryptography`` package (a test dependency).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.etcd import EtcdClient, EtcdConfig
from coordinator.keys import Keys
from tests.conftest import WorkerProcess, wait_until
from tests.etcd_server import EtcdCluster
from tests.helpers import decision

pytest.importorskip("cryptography")
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NAMESPACE = "/secure"
ROOT_PASSWORD = "root-Secret-42"
WORKER_PASSWORD = "worker-Secret-7d1e"  # searched for in the worker's log


# -- certificates ----------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(directory: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write(directory / name, key, cert)
    return key, cert


def _leaf(directory: Path, name: str, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
          *, server: bool) -> None:
    ca_key, ca_cert = ca
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server
            else [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
    _write(directory / name, key, builder.sign(ca_key, hashes.SHA256()))


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # trusted by nobody: a "wrong CA"


def make_pki(directory: Path) -> Pki:
    ca = _ca(directory, "ca")
    _leaf(directory, "server", ca, server=True)
    _leaf(directory, "client", ca, server=False)
    _ca(directory, "other-ca")
    return Pki(directory / "ca.crt", directory / "server.crt", directory / "server.key",
               directory / "client.crt", directory / "client.key", directory / "other-ca.crt")


# -- a TLS + auth etcd -----------------------------------------------------------------


@dataclass
class SecureEtcd:
    cluster: EtcdCluster
    pki: Pki

    @property
    def endpoints(self) -> str:
        return self.cluster.endpoints

    def etcdctl(self, *args: str, user: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        tls = ["--cacert", str(self.pki.ca), "--cert", str(self.pki.client_cert),
               "--key", str(self.pki.client_key)]
        auth = [f"--user={user}"] if user else []
        return self.cluster.etcdctl(*tls, *auth, *args, check=check)

    def tls_options(self) -> list[str]:
        return ["--etcd", self.endpoints, "--etcd-ca", str(self.pki.ca),
                "--etcd-cert", str(self.pki.client_cert), "--etcd-key", str(self.pki.client_key)]

    def config(self, user: str = "worker", password: str = WORKER_PASSWORD) -> EtcdConfig:
        return EtcdConfig(endpoints=(self.endpoints,), ca_cert=str(self.pki.ca),
                          cert=str(self.pki.client_cert), key=str(self.pki.client_key),
                          user=user, password=password)


def _role_recipe(etcd: SecureEtcd) -> None:
    """The recipe of docs/operations.md, "etcd authentication", verbatim."""
    root = f"root:{ROOT_PASSWORD}"
    etcd.etcdctl("user", "add", root, "--interactive=false")
    etcd.etcdctl("role", "add", "dispatch-worker")
    etcd.etcdctl("role", "grant-permission", "dispatch-worker", "--prefix=true", "readwrite",
                 f"{NAMESPACE}/")
    etcd.etcdctl("user", "add", f"worker:{WORKER_PASSWORD}", "--interactive=false")
    etcd.etcdctl("user", "grant-role", "worker", "dispatch-worker")
    # a user with a grant on another prefix only, to show "permission denied"
    etcd.etcdctl("role", "add", "elsewhere")
    etcd.etcdctl("role", "grant-permission", "elsewhere", "--prefix=true", "readwrite",
                 "/elsewhere/")
    etcd.etcdctl("user", "add", "stranger:stranger-pw", "--interactive=false")
    etcd.etcdctl("user", "grant-role", "stranger", "elsewhere")
    etcd.etcdctl("auth", "enable")


@pytest.fixture(scope="module")
def secure_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEtcd]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    cluster = EtcdCluster(1, scheme="https", extra_args=[
        "--cert-file", str(pki.server_cert), "--key-file", str(pki.server_key),
        "--client-cert-auth", "--trusted-ca-file", str(pki.ca),
    ])
    etcd = SecureEtcd(cluster, pki)
    try:
        # EtcdCluster.start()'s readiness probe speaks plain etcdctl; ours adds TLS.
        for member in cluster.members:
            member.start(cluster.initial_cluster)
        wait_until(lambda: etcd.etcdctl("endpoint", "health", check=False).returncode == 0,
                   timeout=30, interval=0.2, message="etcd with TLS to become healthy")
        _role_recipe(etcd)
        yield etcd
    finally:
        cluster.close()


def _dispatchctl(etcd: SecureEtcd, *args: str, env: dict[str, str] | None = None,
                 tls: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli.ctl", *(tls or etcd.tls_options()),
         "--etcd-timeout", "3", "--namespace", NAMESPACE, *args],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("dispatchctl: error: "), lines[0]
    return lines[0]


# -- the tests ---------------------------------------------------------------------------


def test_a_worker_with_tls_and_a_password_decides_and_never_logs_it(
        secure_etcd: SecureEtcd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password_env = {"DISPATCH_ETCD_USER": "worker", "DISPATCH_ETCD_PASSWORD": WORKER_PASSWORD}
    added = _dispatchctl(secure_etcd, "city", "add", "paris", "--solver", "greedy",
                         "--period", "0.3", env=password_env)
    assert added.returncode == 0, added.stderr

    # The password reaches the worker through its environment only, as documented (a
    # flag would show in the process list). WorkerProcess passes os.environ on.
    monkeypatch.setenv("DISPATCH_ETCD_PASSWORD", WORKER_PASSWORD)
    worker = WorkerProcess(secure_etcd.endpoints, NAMESPACE, "secure-w1", tmp_path,
                           "--etcd-ca", str(secure_etcd.pki.ca),
                           "--etcd-cert", str(secure_etcd.pki.client_cert),
                           "--etcd-key", str(secure_etcd.pki.client_key),
                           "--etcd-user", "worker", "--log-level", "debug")
    monkeypatch.delenv("DISPATCH_ETCD_PASSWORD")
    try:
        with EtcdClient(secure_etcd.config()) as client:
            keys = Keys(NAMESPACE)
            first = wait_until(lambda: decision(client, keys, "paris"), timeout=20,
                               message="a decision for paris")
            assert first.worker_id == "secure-w1"  # type: ignore[attr-defined]
            wait_until(lambda: (d := decision(client, keys, "paris")) is not None
                       and d.tick >= 3, timeout=20, message="three ticks")
        status = _dispatchctl(secure_etcd, "status", env=password_env)
        assert status.returncode == 0, status.stderr
        assert "secure-w1" in status.stdout
        verify = _dispatchctl(secure_etcd, "verify", env=password_env)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        code = worker.terminate()
        log = worker.log()
        worker.close()
    assert code == 0, log
    assert "new session with lease" in log, log
    assert WORKER_PASSWORD not in log


def test_a_wrong_password_is_one_line(secure_etcd: SecureEtcd) -> None:
    line = _one_line_error(_dispatchctl(
        secure_etcd, "status",
        env={"DISPATCH_ETCD_USER": "worker", "DISPATCH_ETCD_PASSWORD": "not-the-password"}))
    assert "refused user 'worker'" in line and "authentication failed" in line, line
    assert "not-the-password" not in line


def test_a_missing_password_is_one_line(secure_etcd: SecureEtcd) -> None:
    line = _one_line_error(_dispatchctl(secure_etcd, "--etcd-user", "worker", "status",
                                        env={"DISPATCH_ETCD_PASSWORD": ""}))
    assert "--etcd-password" in line, line


def test_a_wrong_ca_is_one_line(secure_etcd: SecureEtcd) -> None:
    tls = ["--etcd", secure_etcd.endpoints, "--etcd-ca", str(secure_etcd.pki.other_ca),
           "--etcd-cert", str(secure_etcd.pki.client_cert),
           "--etcd-key", str(secure_etcd.pki.client_key)]
    started = time.monotonic()
    line = _one_line_error(_dispatchctl(
        secure_etcd, "status", tls=tls,
        env={"DISPATCH_ETCD_USER": "worker", "DISPATCH_ETCD_PASSWORD": WORKER_PASSWORD}))
    assert secure_etcd.endpoints in line, line
    assert time.monotonic() - started < 30


def test_no_client_certificate_is_one_line(secure_etcd: SecureEtcd) -> None:
    tls = ["--etcd", secure_etcd.endpoints, "--etcd-ca", str(secure_etcd.pki.ca)]
    line = _one_line_error(_dispatchctl(
        secure_etcd, "status", tls=tls,
        env={"DISPATCH_ETCD_USER": "worker", "DISPATCH_ETCD_PASSWORD": WORKER_PASSWORD}))
    assert secure_etcd.endpoints in line, line


def test_a_user_without_a_grant_on_the_namespace_is_refused_in_one_line(
        secure_etcd: SecureEtcd) -> None:
    line = _one_line_error(_dispatchctl(
        secure_etcd, "status",
        env={"DISPATCH_ETCD_USER": "stranger", "DISPATCH_ETCD_PASSWORD": "stranger-pw"}))
    assert "permission denied" in line, line


def test_the_worker_role_cannot_touch_other_prefixes(secure_etcd: SecureEtcd) -> None:
    """The recipe grants the namespace and nothing else."""
    from coordinator.errors import EtcdAuthError

    with EtcdClient(secure_etcd.config()) as client:
        client.put(f"{NAMESPACE}/probe", "ok")
        client.delete(f"{NAMESPACE}/probe")
        with pytest.raises(EtcdAuthError, match="permission denied"):
            client.put("/elsewhere/probe", "no")


def test_doctor_works_with_the_worker_role(secure_etcd: SecureEtcd) -> None:
    """The operator tooling needs no root: doctor reads what the role grants."""
    from tests.test_ops_cli import _command

    result = subprocess.run(
        [*_command(), *secure_etcd.tls_options(), "--namespace", NAMESPACE, "doctor",
         "--skew-sample", "0"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "DISPATCH_ETCD_USER": "worker",
             "DISPATCH_ETCD_PASSWORD": WORKER_PASSWORD},
    )
    assert "etcd alarms: none" in result.stdout, result.stdout + result.stderr
    assert "etcd db size:" in result.stdout and "etcd history:" in result.stdout
    assert WORKER_PASSWORD not in result.stdout + result.stderr

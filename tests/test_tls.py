"""TLS: `fermion up` and `fermion serve` with a certificate this test makes (its own CA), over both
gateways; the CLI, `Platform` and `Client` verify it with that CA and refuse it without."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from support import EXAMPLES, ROOT, RunningPlatform, free_port, running_platform, running_server
from typer.testing import CliRunner

from fermion.cli import app
from fermion.client import APIError, AsyncClient, Client
from fermion.client._tls import CACertError, tls_verify
from fermion.client.platform import Platform, PlatformConnectionError
from fermion.serving.tls import HTTPSRedirect, TLSFileError, check_tls_files

x509 = pytest.importorskip("cryptography.x509")

ECHO = str(EXAMPLES / "echo.py")
GATEWAYS = [
    "python",
    pytest.param(
        "haproxy",
        marks=pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)"),
    ),
]


@dataclass(frozen=True)
class PKI:
    """A CA and a server certificate it signed for 127.0.0.1 and localhost, as PEM files."""

    ca: Path
    cert: Path
    key: Path
    other_key: Path  # a key that belongs to no certificate here

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def _make_pki(folder: Path) -> PKI:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fermion test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    pki = PKI(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "other.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(pem_key(key))
    pki.other_key.write_bytes(pem_key(ec.generate_private_key(ec.SECP256R1())))
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return _make_pki(tmp_path_factory.mktemp("pki"))


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`fermion ARGS...` in its own process, with `env` on top of ours (FERMION_* of ours removed)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FERMION_")}
    return subprocess.run(
        [sys.executable, "-m", "fermion", *args],
        env={**base, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


# -- refusals before anything binds ---------------------------------------------------------------


def test_bad_certificate_files_are_one_clear_line(pki: PKI, tmp_path: Path) -> None:
    check_tls_files(None, None)
    check_tls_files(pki.cert, pki.key)
    with pytest.raises(TLSFileError, match="give both --tls-cert"):
        check_tls_files(pki.cert, None)
    with pytest.raises(TLSFileError, match="--tls-key .*nope.key: No such file"):
        check_tls_files(pki.cert, tmp_path / "nope.key")
    with pytest.raises(TLSFileError, match="the key does not belong to the certificate"):
        check_tls_files(pki.cert, pki.other_key)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(TLSFileError, match="give a PEM certificate"):
        check_tls_files(tmp_path / "junk.pem", pki.key)

    runner = CliRunner()
    port = free_port()
    result = runner.invoke(
        app,
        [
            "up",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(port),
            "--tls-cert",
            str(pki.cert),
            "--tls-key",
            str(pki.other_key),
        ],
    )
    assert result.exit_code == 2
    assert "error: cannot serve TLS" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "data").exists()  # refused before anything was created or bound
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path / "data"), "--redirect-http-port", str(port)])
    assert result.exit_code == 2 and "give --tls-cert and --tls-key too" in result.output
    result = runner.invoke(app, ["serve", ECHO, "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(pki.key)])
    assert result.exit_code == 2 and "--tls-cert" in result.output and "missing.pem" in result.output


def test_clients_refuse_an_unusable_ca_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERMION_CA_CERT", raising=False)
    assert tls_verify() is True  # https:// verified against the system's CAs: never switched off
    with pytest.raises(CACertError, match="nope.pem: no such file"):
        tls_verify(tmp_path / "nope.pem")
    (tmp_path / "junk.pem").write_text("junk\n")
    monkeypatch.setenv("FERMION_CA_CERT", str(tmp_path / "junk.pem"))
    with pytest.raises(CACertError, match=r"\$FERMION_CA_CERT .*junk.pem is not a PEM CA certificate"):
        tls_verify()
    result = CliRunner().invoke(app, ["ls", "--url", "https://127.0.0.1:1"])
    assert result.exit_code == 2 and "junk.pem is not a PEM CA certificate" in result.output


def test_the_redirect_keeps_host_path_and_query() -> None:
    redirect = HTTPSRedirect(8443, "127.0.0.1")
    assert redirect.location("example.com:8080", b"/run/echo/predict?x=1") == "https://example.com:8443/run/echo/predict?x=1"
    assert redirect.location("[::1]:80", b"/") == "https://[::1]:8443/"
    assert redirect.location("evil.com/x@y", b"/") == "https://127.0.0.1:8443/"  # not a host: ours instead
    assert redirect.location("h", b"http://elsewhere/") is None
    assert HTTPSRedirect(443, "h").location("example.com", b"/a") == "https://example.com/a"


# -- a real `fermion up` over TLS -------------------------------------------------------------------


@pytest.fixture(params=GATEWAYS)
def tls_platform(request: pytest.FixtureRequest, pki: PKI, tmp_path: Path) -> Iterator[tuple[RunningPlatform, int]]:
    redirect_port = free_port()
    with running_platform(
        tmp_path / "data",
        "--gateway",
        request.param,
        "--tls-cert",
        str(pki.cert),
        "--tls-key",
        str(pki.key),
        "--redirect-http-port",
        str(redirect_port),
        verify=pki.context(),
    ) as platform:
        yield platform, redirect_port


def test_a_tls_platform_serves_api_console_and_gateway_over_https(tls_platform: tuple[RunningPlatform, int], pki: PKI) -> None:
    platform, redirect_port = tls_platform
    url, data_dir = platform.url, platform.data_dir
    assert url.startswith("https://127.0.0.1:")
    assert json.loads((data_dir / "up.json").read_text())["url"] == url  # how the CLI finds it
    if "HAProxy in front" in platform.log():
        pem = data_dir / "haproxy" / "tls.pem"
        assert (pem.stat().st_mode & 0o777) == 0o600 and "PRIVATE KEY" in pem.read_text()

    # The Python Platform client and Client verify with the test's CA.
    with Platform(url, platform.token, ca_cert=pki.ca) as remote:
        created = remote.deployments.create("echo", ECHO, public=True)
        assert created.url == f"{url}/run/echo"  # the platform knows it is reached over https
        remote.deployments.wait_ready("echo", timeout=60)
        with remote.client("echo") as echo:
            assert echo.predict(text="hi") == {"output": "echo: hi"}
    with platform.api() as api:
        console = api.get("/")
        assert console.status_code == 200 and "text/html" in console.headers["content-type"]
        assert api.get("/run/echo/info").json() == {"name": "echo", "prefix": "echo: "}
        assert api.get("/api/v1/info").json()["url"] == url

    # The CLI: FERMION_URL + FERMION_CA_CERT, or --ca-cert; without the CA, one line about the certificate.
    env = {"FERMION_URL": url, "FERMION_TOKEN": platform.token}
    listed = _cli("ls", "--json", env={**env, "FERMION_CA_CERT": str(pki.ca)})
    assert listed.returncode == 0, listed.stderr
    assert [d["name"] for d in json.loads(listed.stdout)] == ["echo"]
    refused = _cli("ls", env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "cannot verify the TLS certificate" in refused.stderr and "--ca-cert" in refused.stderr
    result = CliRunner().invoke(app, ["ls", "--url", url, "--token", platform.token, "--ca-cert", str(pki.ca)])
    assert result.exit_code == 0 and "echo" in result.output

    with pytest.raises(PlatformConnectionError, match="cannot verify the TLS certificate"):
        Platform(url, platform.token).info()
    with pytest.raises(APIError, match="cannot verify the TLS certificate"):
        Client(f"{url}/run/echo")

    # Plain HTTP on the TLS port gets no answer; the redirect port sends it to HTTPS.
    plain = url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/api/v1/info", timeout=5)
    moved = httpx.get(f"http://127.0.0.1:{redirect_port}/run/echo/info?x=1", timeout=5)
    assert moved.status_code == 308 and moved.headers["location"] == f"{url}/run/echo/info?x=1"
    followed = httpx.get(f"http://127.0.0.1:{redirect_port}/run/echo/info", follow_redirects=True, verify=pki.context())
    assert followed.json()["name"] == "echo"


def test_fermion_serve_speaks_tls_to_the_client(pki: PKI, tmp_path: Path) -> None:
    with running_server(
        ECHO, "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), verify=pki.context(), tmp_dir=tmp_path
    ) as server:
        assert server.url.startswith("https://127.0.0.1:")
        with Client(server.url, ca_cert=str(pki.ca)) as client:
            assert client.predict(text="tls") == {"output": "echo: tls"}
        with pytest.raises(APIError, match="cannot verify the TLS certificate .*--ca-cert"):
            Client(server.url)

        async def call_async() -> object:
            async with AsyncClient(server.url, ca_cert=pki.ca) as client:
                return await client.predict(text="async")

        assert asyncio.run(call_async()) == {"output": "echo: async"}
        called = _cli("call", server.url, "predict", "text=hi", "--ca-cert", str(pki.ca), env={})
        assert called.returncode == 0 and "echo: hi" in called.stdout
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url.replace("https://", "http://") + "/readyz", timeout=5)

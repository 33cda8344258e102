"""Test collectors for SIEM forwarding: a self-signed CA made here, and listener processes
(tests/support/siem_listener.py) a test can SIGKILL and start again on the same port."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LISTENER = Path(__file__).resolve().parents[1] / "support" / "siem_listener.py"
TOKEN = "siem-test-token-0123456789"


def make_ca(directory: Path, name: str = "test") -> dict[str, Path]:
    """A CA and a server certificate it signed for 127.0.0.1 and localhost; returns their files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dbportal {name} CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    files = {"ca": directory / f"{name}-ca.pem", "cert": directory / f"{name}-server.pem",
             "key": directory / f"{name}-server.key"}
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return files


class Listener:
    """One collector process: `start()` (port 0 the first time, the same port after), `kill()`."""

    def __init__(self, mode: str, out: Path, *, tls: dict[str, Path] | None = None, token: str = TOKEN) -> None:
        self.mode, self.out, self.tls, self.token = mode, out, tls, token
        self.port = 0
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> Listener:
        cmd = [sys.executable, str(LISTENER), self.mode, "--port", str(self.port), "--out", str(self.out)]
        if self.tls:
            cmd += ["--cert", str(self.tls["cert"]), "--key", str(self.tls["key"])]
        if self.mode == "https":
            cmd += ["--token", self.token]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        line = self.process.stdout.readline()
        if not line.startswith("listening ") or time.monotonic() > deadline:
            raise RuntimeError(f"{self.mode} listener did not start: {line}{self.process.stdout.read()}")
        self.port = int(line.split()[1])
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def received(self) -> list[dict]:
        try:
            lines = self.out.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def seqs(self) -> list[int]:
        return [item["msg"]["seq"] for item in self.received() if "msg" in item]

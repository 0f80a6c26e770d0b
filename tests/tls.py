"""Test certificates made with openssl: a CA, a broker certificate for 127.0.0.1 and
client certificates, all PEM (what Kafka's PEM key stores and librdkafka read)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path  # PKCS#8, unencrypted

    @property
    def keystore(self) -> Path:
        """Key and certificate in one PEM file (a Kafka PEM key store)."""
        combined = self.cert.with_suffix(".keystore.pem")
        if not combined.exists():
            combined.write_text(self.key.read_text() + self.cert.read_text())
        return combined


class Authority:
    """A CA that signs certificates in `folder`."""

    def __init__(self, folder: Path, name: str = "meterline-test-ca") -> None:
        self.folder = folder
        self.cert, self.key = folder / f"{name}.pem", folder / f"{name}.key"
        _openssl(
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", f"/CN={name}", "-keyout", str(self.key), "-out", str(self.cert)),
        )

    def issue(self, name: str, ip: str | None = None) -> Identity:
        """A certificate for `name` (and the IP address `ip`, for a server)."""
        key, request, cert = (self.folder / f"{name}{ext}" for ext in (".key", ".csr", ".pem"))
        _openssl(
            *("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}"),
            *("-keyout", str(key), "-out", str(request)),
        )
        extensions = self.folder / f"{name}.ext"
        extensions.write_text(f"subjectAltName=IP:{ip}\n" if ip else "basicConstraints=CA:FALSE\n")
        _openssl(
            *("x509", "-req", "-in", str(request), "-CA", str(self.cert), "-CAkey", str(self.key)),
            *("-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(extensions)),
        )
        return Identity(cert, key)

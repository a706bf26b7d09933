"""A real HTTP(S) coordinator on 127.0.0.1 for the workflow tests, with failures that can be injected.

The certificate is self-signed, generated with `cryptography` per test session; clients trust it through
the CA file. Behaviour is a queue of "plans" consumed one per request (then the default: accept).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# The bearer token the test coordinator accepts (a secret: tests check it never shows).
TOKEN = "lease-token-7f3a9c2e5b1d4860"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "runnerlib test coordinator")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@dataclass
class Plan:
    """What the server does with one request."""

    status: int = 201
    body: Any = None
    delay: float = 0.0
    drop: bool = False               # close the connection without a reply
    location: str | None = None      # for redirects
    headers: dict[str, str] = field(default_factory=dict)


class Coordinator:
    """State shared with the handler: received requests, created jobs (by idempotency key), plans, jobs list."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.plans: list[Plan] = []
        self.requests: list[dict[str, Any]] = []
        self.created: dict[str, list[dict[str, Any]]] = {}   # idempotency key -> jobs
        self.jobs: list[dict[str, Any]] = []                 # what GET /api/v1/jobs lists
        self.lock = threading.Lock()

    def next_plan(self) -> Plan | None:
        with self.lock:
            return self.plans.pop(0) if self.plans else None


def _handler(coordinator: Coordinator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            record = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
            with coordinator.lock:
                coordinator.requests.append(record)
            plan = coordinator.next_plan()
            if plan is not None:
                if plan.delay:
                    time.sleep(plan.delay)
                if plan.drop:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if plan.location:
                    self._reply(plan.status, None, {"Location": plan.location, **plan.headers})
                    return
                if plan.status != 201 or plan.body is not None:
                    self._reply(plan.status, plan.body, plan.headers)
                    return
            if self.headers.get("Authorization") != f"Bearer {coordinator.token}":
                self._reply(401, {"error": "bad token " + (self.headers.get("Authorization") or "")})
                return
            if self.command == "GET" and self.path.startswith("/api/v1/jobs?"):
                from urllib.parse import parse_qs, urlsplit

                name = parse_qs(urlsplit(self.path).query).get("name", [""])[0]
                self._reply(200, {"jobs": [j for j in coordinator.jobs if j.get("name") == name]})
                return
            if self.command == "POST" and self.path.endswith("/triggers"):
                key = self.headers.get("Idempotency-Key") or ""
                document = json.loads(body)
                with coordinator.lock:
                    if key in coordinator.created:
                        self._reply(409, {"error": "duplicate operation"})
                        return
                    coordinator.created[key] = document["jobs"]
                self._reply(201, {"accepted": len(document["jobs"])})
                return
            self._reply(404, {"error": "no such endpoint"})

        do_GET = _handle
        do_POST = _handle

    return Handler


class CoordinatorServer:
    """Context manager: a threaded server on 127.0.0.1 (HTTPS when given a certificate)."""

    def __init__(self, token: str, cert: tuple[Path, Path] | None = None) -> None:
        self.state = Coordinator(token)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.server.daemon_threads = True
        self.scheme = "http"
        if cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> CoordinatorServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

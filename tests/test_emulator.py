"""The test GCS (`tests/gcs.py`) behaves as GCS where the kill tests rely on it: an upload whose client
dies inside the body leaves no object (GCS finalizes an object only when its body is complete)."""

from __future__ import annotations

import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest


def _upload(gcs, bucket: str, name: str, body: bytes, declared: int) -> None:
    """A media upload of `body` through the HTTPS proxy that TensorFlow's client uses, declaring
    `declared` bytes, the connection closed after `body`."""
    proxy_port = int(gcs.env["https_proxy"].rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    raw.sendall(b"CONNECT www.googleapis.com:443 HTTP/1.1\r\nHost: www.googleapis.com:443\r\n\r\n")
    assert raw.recv(1024).startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=gcs.env["CURL_CA_BUNDLE"])
    with context.wrap_socket(raw, server_hostname="www.googleapis.com") as tls:
        head = (
            f"POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name={name} HTTP/1.1\r\n"
            f"Host: www.googleapis.com\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
        )
        tls.sendall(head.encode() + body)
        if len(body) == declared:
            assert tls.recv(1024).startswith(b"HTTP/1.1 200")


def _exists(gcs, bucket: str, name: str) -> bool:
    try:
        urllib.request.urlopen(f"{gcs.url}/storage/v1/b/{bucket}/o/{name}", timeout=10)
        return True
    except urllib.error.HTTPError as e:
        assert e.code == 404
        return False


@pytest.mark.parametrize("sent, declared, kept", [(b"0123456789", 10, True), (b"01234", 10, False), (b"", 10, False)])
def test_a_half_sent_upload_leaves_no_object(gcs, sent, declared, kept):
    gcs.bucket("emulator")
    name = f"upload-{len(sent)}"
    _upload(gcs, "emulator", name, sent, declared)
    if not kept:
        time.sleep(1.0)  # the proxy's thread would forward a half-sent body after the client has gone
    assert _exists(gcs, "emulator", name) == kept

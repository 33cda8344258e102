"""A small SIEM collector for the forwarding tests, run as its own process so a test can SIGKILL it.

    python tests/support/siem_listener.py syslog --port 0 --out FILE [--cert C --key K]
    python tests/support/siem_listener.py https  --port 0 --out FILE --cert C --key K [--token T]

Binds 127.0.0.1 only and prints `listening <port>` once ready. `syslog` reads RFC 6587
octet-counted frames over TCP (TLS with --cert), parses each as an RFC 5424 message (header,
structured data with its escapes, the MSG after the BOM as JSON) and appends one JSON line per
frame to FILE, flushed before it reads on; it closes a connection when the sender half-closes
it. A frame that is not well-formed RFC 5424 is recorded as {"error": ...} (the test fails on it).
`https` answers POSTs with a bearer token (401 without it), appends each JSON line of the body to
FILE and only then answers 200.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEADER = re.compile(rb"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")
BOM = b"\xef\xbb\xbf"
_lock = threading.Lock()


def append(out, record: dict) -> None:
    with _lock:
        out.write(json.dumps(record) + "\n")
        out.flush()  # in the kernel's page cache: it survives the SIGKILL the tests send


def parse_sd(data: bytes) -> tuple[dict, bytes]:
    """The structured data (one or more [id k="v" ...]) and what follows it."""
    if data.startswith(b"- "):
        return {}, data[2:]
    elements: dict = {}
    text = data.decode()
    i = 0
    while i < len(text) and text[i] == "[":
        end_id = min(x for x in (text.find(" ", i), text.find("]", i)) if x != -1)
        sd_id = text[i + 1:end_id]
        params: dict = {}
        i = end_id
        while text[i] == " ":
            eq = text.index("=", i)
            name = text[i + 1:eq]
            if text[eq + 1] != '"':
                raise ValueError("SD-PARAM value not quoted")
            j, value = eq + 2, []
            while text[j] != '"':
                if text[j] == "\\" and text[j + 1] in '"\\]':
                    value.append(text[j + 1])
                    j += 2
                    continue
                if text[j] == "]":
                    raise ValueError("unescaped ] in an SD-PARAM value")
                value.append(text[j])
                j += 1
            params[name] = "".join(value)
            i = j + 1
        if text[i] != "]":
            raise ValueError("SD-ELEMENT not closed")
        elements[sd_id] = params
        i += 1
    rest = text[i:].encode()
    if not rest.startswith(b" "):
        raise ValueError("no space after the structured data")
    return elements, rest[1:]


def parse_message(message: bytes) -> dict:
    match = HEADER.match(message)
    if not match:
        raise ValueError("not an RFC 5424 header")
    pri, ts, host, app, procid, msgid = (g.decode() for g in match.groups())
    sd, msg = parse_sd(message[match.end():])
    if not msg.startswith(BOM):
        raise ValueError("MSG without the UTF-8 BOM")
    return {"pri": int(pri), "ts": ts, "host": host, "app": app, "procid": procid, "msgid": msgid, "sd": sd,
            "msg": json.loads(msg[len(BOM):].decode())}


def serve_syslog_connection(conn: socket.socket, out) -> None:
    buffer = b""
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            buffer += chunk
            while True:
                space = buffer.find(b" ")
                if space == -1:
                    break
                length_text = buffer[:space]
                if not length_text.isdigit():
                    append(out, {"error": f"bad frame length {length_text[:20]!r}"})
                    return
                length = int(length_text)
                if len(buffer) < space + 1 + length:
                    break
                message = buffer[space + 1:space + 1 + length]
                buffer = buffer[space + 1 + length:]
                try:
                    append(out, parse_message(message))
                except (ValueError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                    append(out, {"error": str(exc), "raw": message[:200].decode(errors="replace")})
        if buffer:
            append(out, {"error": f"{len(buffer)} bytes of a partial frame at close"})
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


def run_syslog(args, out) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(16)
    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
    print(f"listening {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        if context is not None:
            try:
                conn = context.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                continue
        threading.Thread(target=serve_syslog_connection, args=(conn, out), daemon=True).start()


def run_https(args, out) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {args.token}":
                self.send_response(401)
                self.end_headers()
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            for line in body.decode().splitlines():
                append(out, {"content_type": self.headers.get("Content-Type"), "msg": json.loads(line)})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("syslog", "https"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--token", default="")
    args = parser.parse_args()
    with open(args.out, "a") as out:
        (run_syslog if args.mode == "syslog" else run_https)(args, out)


if __name__ == "__main__":
    sys.exit(main())

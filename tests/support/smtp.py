"""A small SMTP server on loopback for tests: takes EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT and
keeps what it was told. Enough of RFC 5321 for smtplib (and so Django's SMTP backend)."""

from __future__ import annotations

import base64
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Session(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        received = self.server.received  # type: ignore[attr-defined]
        message: dict = {"auth": None, "from": None, "to": [], "data": ""}
        self.reply("220 loopback ESMTP")
        while line := self.rfile.readline():
            command = line.decode().rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-loopback")
                self.reply("250 AUTH PLAIN")
            elif verb == "AUTH":
                _, mechanism, *initial = command.split(" ")
                _, user, password = base64.b64decode(initial[0]).decode().split("\0")
                message["auth"] = (mechanism, user, password)
                self.reply("235 2.7.0 accepted")
            elif verb == "MAIL":
                message["from"] = command.split(":", 1)[1].strip().split(" ")[0].strip("<>")
                self.reply("250 ok")
            elif verb == "RCPT":
                message["to"].append(command.split(":", 1)[1].strip().strip("<>"))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                lines = []
                while (data := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(data.decode())
                message["data"] = "".join(lines)
                received.append(message)
                message = {"auth": message["auth"], "from": None, "to": [], "data": ""}
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


@contextmanager
def smtp_server() -> Iterator[tuple[int, list[dict]]]:
    """(port, messages received) of a server on 127.0.0.1 while the block runs."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Session)
    server.daemon_threads = True
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()

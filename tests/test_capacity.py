"""Bounded memory (issue 29): admission refuses new work before Redis is full, whatever the mix of clients."""
import pytest

from tests.conftest import WebServer, http_json, post_from, wait_until
from webapp.capacity import ADMIT_UP_TO, parse_size

ADDRESSES = [f"127.0.0.{n}" for n in range(10, 18)]  # eight clients, each under its own budget


def test_a_flood_from_many_clients_is_refused_in_words_before_redis_is_full(redis_server, redis_client, start_workers,
                                                                            tmp_path):
    """Refused in time: once workers answer everything accepted, Redis has held it all and never filled up."""
    room = 32 * 2**20
    limit = redis_client.info("memory")["used_memory"] + room
    redis_client.config_set("maxmemory", limit)  # noeviction, as make redis configures it
    web = WebServer(redis_server.url, tmp_path / "web.log", PRICE_SOURCE="synthetic",
                    RATE_LIMIT_SYMBOLS="100000/minute", RESULT_TTL=3600)
    accepted, refused = [], []
    try:
        for n in range(1000):  # no worker yet: everything accepted waits
            status, body, headers = post_from(ADDRESSES[n % len(ADDRESSES)], web.url, "/api/analyses",
                                              {"symbols": [f"M{n}S{i}" for i in range(20)]})
            if status == 202:
                accepted.append(body["status_url"])
                continue
            assert status == 503, body
            refused.append((body["message"], headers.get("Retry-After")))
            if len(refused) == 5:
                break
        assert len(refused) == 5 and len(accepted) >= 10, (len(accepted), refused)
        for message, retry_after in refused:
            assert "the job store is nearly full" in message and retry_after == "60", (message, retry_after)
        workers = start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic")
        for status_url in accepted:  # every analysis that answered 202 is answered in full
            wait_until(lambda url=status_url: http_json("GET", web.url + url)["state"] == "finished", timeout=120,
                       what="every accepted analysis to finish")
        peak = redis_client.info("memory")["used_memory_peak"]
        assert peak <= (ADMIT_UP_TO + 0.05) * limit, f"{peak / limit:.0%} of maxmemory at the peak"
        assert "OOM" not in workers.log_text() and "OOM" not in (tmp_path / "web.log").read_text()
    finally:
        web.stop()
        redis_client.config_set("maxmemory", 0)


@pytest.mark.parametrize(("size", "expected"), [("1gb", 2**30), ("512mb", 512 * 2**20), ("100k", 100_000), ("4096", 4096)])
def test_sizes_read_as_redis_reads_them(size, expected):
    assert parse_size(size) == expected

"""Bounded memory (issue 29): admission refuses new work before Redis is full, whatever the mix of clients."""
import threading

import pytest

from tests.conftest import WebServer, http_json, post_from, wait_until
from webapp.capacity import ADMIT_UP_TO, FINISHED_SYMBOL_BYTES, parse_size

ADDRESSES = [f"127.0.0.{n}" for n in range(10, 18)]  # eight clients, each under its own budget


def test_a_flood_from_many_clients_is_refused_in_words_before_redis_is_full(redis_server, redis_client, start_workers,
                                                                            tmp_path):
    """Two web processes, sixteen senders on eight addresses at once, no worker yet: admission spends the headroom once.

    Then workers answer every accepted analysis, and Redis, having held it all, never filled up.
    """
    room = 32 * 2**20
    used_before = redis_client.info("memory")["used_memory"]
    limit = used_before + room
    redis_client.config_set("maxmemory", limit)  # noeviction, as make redis configures it
    web = WebServer(redis_server.url, tmp_path / "web.log", PRICE_SOURCE="synthetic", WEB_PROCESSES=2,
                    RATE_LIMIT_SYMBOLS="100000/minute", RESULT_TTL=3600)
    accepted, refused = [], []

    def send(sender: int) -> None:
        for n in range(100):
            status, body, headers = post_from(ADDRESSES[sender % len(ADDRESSES)], web.url, "/api/analyses",
                                              {"symbols": [f"M{sender}X{n}S{i}" for i in range(100)]})
            if status != 202:
                refused.append((status, body["message"], headers.get("Retry-After")))
                return
            accepted.append(body["status_url"])

    try:
        senders = [threading.Thread(target=send, args=(k,)) for k in range(16)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert len(refused) == 16 and accepted, (len(accepted), refused[:3])
        for status, message, retry_after in refused:
            assert status == 503 and "the job store is nearly full" in message and retry_after == "60", message
        promised = used_before + len(accepted) * 100 * FINISHED_SYMBOL_BYTES
        assert promised <= ADMIT_UP_TO * limit, f"admitted {promised / limit:.0%} of maxmemory: the headroom twice over?"
        workers = start_workers(redis_server.url, 2, PRICE_SOURCE="synthetic")
        for status_url in accepted:  # every analysis that answered 202 is answered in full
            wait_until(lambda url=status_url: http_json("GET", web.url + url)["state"] == "finished", timeout=180,
                       what="every accepted analysis to finish")
        peak = redis_client.info("memory")["used_memory_peak"]
        assert peak <= (ADMIT_UP_TO + 0.05) * limit, f"{peak / limit:.0%} of maxmemory at the peak"
        assert "OOM" not in workers.log_text() and "OOM" not in (tmp_path / "web.log").read_text()
    finally:
        web.stop()
        redis_client.config_set("maxmemory", 0)


def test_a_client_past_its_budget_holds_no_headroom_another_needs(redis_server, redis_client, tmp_path):
    """Refused for its budget (429), a request gives back what admission reserved for it."""
    limit = redis_client.info("memory")["used_memory"] + 16 * 2**20
    redis_client.config_set("maxmemory", limit)
    web = WebServer(redis_server.url, tmp_path / "web.log", PRICE_SOURCE="synthetic", RATE_LIMIT_SYMBOLS="10/minute")
    try:
        refused = [post_from(ADDRESSES[0], web.url, "/api/analyses", {"symbols": [f"X{n}S{i}" for i in range(size)]})[0]
                   for n, size in enumerate([100] * 20 + [11])]
        assert set(refused) == {429}, refused
        status, body, _ = post_from(ADDRESSES[1], web.url, "/api/analyses", {"symbols": ["OTHER"]})
        assert status == 202, body
    finally:
        web.stop()
        redis_client.config_set("maxmemory", 0)


@pytest.mark.parametrize(("size", "expected"), [("1gb", 2**30), ("512mb", 512 * 2**20), ("100k", 100_000), ("4096", 4096)])
def test_sizes_read_as_redis_reads_them(size, expected):
    assert parse_size(size) == expected

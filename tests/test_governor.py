"""The fleet-wide Yahoo budget (jobs/governor.py) on a real Redis: slots, spacing, bulk's horizon, cool-downs."""
import threading

import pytest
from redis import Redis

from jobs.governor import Governor, PutBack
from jobs.records import YAHOO_STATS_KEY
from jobs.sources import CachedSource, YahooSource
from tests.conftest import RedisServer, wait_until
from tests.fake_yahoo import session_for


def governor(redis_client, rate: float = 10.0, burst: int = 3, cooldown: int = 60, egress: str = "egress-a") -> Governor:
    return Governor(redis_client, egress, rate, burst, cooldown, "trends-bulk", longest_job=15)


def reserve(gov: Governor, longest_ms: int) -> tuple[int, int]:
    """Ask the script directly: (reserved, wait ms)."""
    return tuple(gov._reserve(longest_ms / 1000, "wait"))


def test_a_burst_goes_at_once_then_slots_are_spaced_by_the_rate(redis_client):
    gov = governor(redis_client, rate=10, burst=3)  # a slot every 100 ms
    with redis_client.pipeline(transaction=False) as pipe:  # six workers asking at once, as far as Redis's clock goes
        for _ in range(6):
            gov._take(keys=gov._keys, args=[gov.interval_ms, gov.tolerance_ms, 10_000, gov.egress, "wait",
                                            gov._furthest_ms], client=pipe)
        answers = pipe.execute()
    assert all(reserved for reserved, _ in answers)
    waits = [wait for _, wait in answers]
    assert waits[:3] == [0, 0, 0], "the burst"
    steps = [later - earlier for earlier, later in zip(waits[2:], waits[3:])]
    assert all(95 <= step <= 100 for step in steps), f"each waiter gets its own slot, 100 ms apart: {waits}"
    assert redis_client.hget(YAHOO_STATS_KEY, "egress-a:waits") == b"3"


def test_no_slot_within_the_wait_allowed_is_a_deferral_that_reserves_nothing(redis_client):
    gov = governor(redis_client, rate=1, burst=1)
    gov.acquire(0, interactive=True)
    with pytest.raises(PutBack) as deferred:
        gov.acquire(0, interactive=True)
    assert 0.9 <= deferred.value.retry_after <= 1.2 * 1.0 + 0.01, "ask again when the next slot is due"
    assert reserve(gov, 2000)[1] > 900, "the deferral did not take the slot"
    assert redis_client.hget(YAHOO_STATS_KEY, "egress-a:deferrals") == b"1"


def test_bulk_jobs_reserve_only_a_short_way_ahead_so_interactive_ones_get_in(redis_client):
    gov = governor(redis_client, rate=10, burst=1)  # bulk horizon: 1 s, ten slots
    for _ in range(11):
        reserve(gov, 1000)  # slots up to 1 s ahead, as bulk jobs take them
    with pytest.raises(PutBack):
        gov.acquire(5, interactive=False)
    waited = threading.Event()
    thread = threading.Thread(target=lambda: (gov.acquire(5, interactive=True), waited.set()))
    thread.start()
    thread.join(10)
    assert waited.is_set(), "an interactive job waits behind the bulk reservations, no more"


def test_egresses_have_budgets_of_their_own(redis_client):
    first, second = governor(redis_client, rate=1, burst=1), governor(redis_client, rate=1, burst=1, egress="egress-b")
    first.acquire(0, interactive=True)
    second.acquire(0, interactive=True)
    with pytest.raises(PutBack):
        first.acquire(0, interactive=True)


def test_a_429_pauses_the_whole_egress_then_calls_resume_without_a_burst(redis_client):
    gov = governor(redis_client, rate=2, burst=5, cooldown=1)
    other_worker = governor(redis_client, rate=2, burst=5, cooldown=1)  # same egress, another process's view
    gov.observe(200)
    gov.observe(429)
    gov.observe(429)  # the same burst: one cool-down
    with pytest.raises(PutBack) as deferred:
        other_worker.acquire(0.1, interactive=True)
    assert 0.5 < deferred.value.retry_after <= 1.2 and deferred.value.cooling, "until the cool-down ends"
    stats = redis_client.hgetall(YAHOO_STATS_KEY)
    assert stats[b"egress-a:requests:429"] == b"2" and stats[b"egress-a:requests:200"] == b"1"
    assert stats[b"egress-a:cooldowns"] == b"1"
    wait_until(lambda: redis_client.pttl("trends:yahoo:cooldown:egress-a") < 0, timeout=5, what="the cool-down to end")
    wait_until(lambda: reserve(gov, 0)[0] == 1, timeout=5, what="a slot after the cool-down")
    assert reserve(gov, 0)[0] == 0, "the budget restarted empty: one call per slot, no burst"


def test_a_slot_reserved_before_a_429_is_void(redis_client):
    gov = governor(redis_client, rate=2, burst=1, cooldown=30)
    gov.acquire(0, interactive=True)
    outcome = []

    def wait_for_the_next_slot() -> None:
        try:
            gov.acquire(5, interactive=True)  # reserves the slot 500 ms ahead and sleeps
            outcome.append("called")
        except PutBack as exc:
            outcome.append(exc.retry_after)

    thread = threading.Thread(target=wait_for_the_next_slot)
    thread.start()
    wait_until(lambda: redis_client.hget(YAHOO_STATS_KEY, "egress-a:waits") == b"1", what="the reservation")
    gov.observe(429)
    thread.join(10)
    assert outcome and outcome[0] != "called" and outcome[0] > 20, "deferred until the cool-down ends"


def test_every_call_of_a_fetch_has_a_slot_and_one_without_is_never_sent(redis_client):
    # Slots 500 ms apart: the last call finds none free unless this test is held up for half a second (a busy CI).
    gov = governor(redis_client, rate=2, burst=1)
    seconds, micros = redis_client.time()
    started_ms = seconds * 1000 + micros // 1000
    gov.acquire(0.8, interactive=True)
    assert gov.admit(), "the fetch's first call: its slot was taken by acquire"
    assert gov.admit(), "a second call (yfinance's own) waits for the next slot, 500 ms on"
    next_slot = float(redis_client.get("trends:yahoo:tat:egress-a"))
    assert next_slot >= started_ms + 1000, "both slots are taken: the next call may go two intervals on at the soonest"
    gov.calls_may_wait(0)
    assert not gov.admit(), "no slot free now and no time to wait: answered here with a 429"


@pytest.mark.parametrize("planted", [b"abc", b"inf", b"nan", str(10**15).encode()])
def test_a_budget_value_that_cannot_be_right_counts_as_now(redis_client, planted):
    gov = governor(redis_client, rate=1, burst=1)
    redis_client.set("trends:yahoo:tat:egress-a", planted)
    gov.acquire(0, interactive=True)  # neither an error, a negative wait nor a stall


def test_a_cool_down_key_without_expiry_pauses_the_egress_until_deleted(redis_client):
    gov = governor(redis_client)
    redis_client.set("trends:yahoo:cooldown:egress-a", 1)  # an operator pausing the egress by hand
    with pytest.raises(PutBack) as deferred:
        gov.acquire(1, interactive=True)
    assert deferred.value.cooling and 5 <= deferred.value.retry_after <= 6, "asks again in a few seconds"
    assert not gov.admit()
    redis_client.delete("trends:yahoo:cooldown:egress-a")
    gov.acquire(0, interactive=True)


def test_with_redis_unreachable_a_fetch_goes_back_to_its_queue_and_makes_no_call(tmp_path):
    # A stopped Redis: its port refuses. The job is put back (its retries untouched), never run without the budget.
    server = RedisServer(str(tmp_path / "redis"))
    server.start()
    server.stop()
    unreachable = Redis.from_url(server.url, socket_connect_timeout=1)
    gov = governor(unreachable)
    with pytest.raises(PutBack, match="call budget could not be read") as first_call:
        gov.acquire(5, interactive=True)
    assert not first_call.value.cooling, "not Yahoo's refusal: no give-up clock starts"
    with pytest.raises(PutBack, match="call budget could not be read"):
        gov.admit()  # a further call of a fetch (yfinance's cookie, its retries)
    session, fake = session_for({})
    source = CachedSource(YahooSource(str(tmp_path / "yf"), session=session, governor=gov), unreachable, 3600)
    with pytest.raises(PutBack, match="call budget could not be read"):
        source.history("AAPL")
    assert fake.urls == [], "no call to Yahoo without a slot"

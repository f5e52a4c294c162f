"""No answer names a host, a port, a file path or an exception: a Redis outage is said in words, the detail logged."""
import json
import re
import urllib.error
import urllib.request

from tests.conftest import RedisServer, WebServer, free_port, http_json
from webapp import create_app

ANALYSIS = {"symbols": ["AAPL"]}
INTERNAL_DETAIL = {
    "a loopback address": re.compile(r"127\.0\.0\.1|localhost"),
    "an errno": re.compile(r"Error \d+|Errno"),
    "a file path": re.compile(r"(?<![\w.:])/[\w.-]+/[\w.-]+|\.py\b"),
    "an exception's name or repr": re.compile(r"\b[A-Z]\w*(Error|Exception)\b|Traceback|<redis\.|redis\.exceptions"),
}


def answer(method: str, url: str, body: dict | None = None) -> tuple[int, str]:
    """The status and body text of a request to the web server, error statuses included."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def internal_detail(text: str, ports: list[int]) -> list[str]:
    """What in `text` names something internal: the kinds found, and any of `ports`."""
    found = [kind for kind, pattern in INTERNAL_DETAIL.items() if pattern.search(text)]
    return found + [f"port {port}" for port in ports if re.search(rf"\b{port}\b", text)]


def outage_answers(web_url: str, analysis_url: str) -> dict[str, tuple[int, str]]:
    """Every endpoint that needs Redis, asked once: endpoint → (status, body)."""
    return {"GET /livez": answer("GET", web_url + "/livez"), "GET /healthz": answer("GET", web_url + "/healthz"),
            "GET /metrics": answer("GET", web_url + "/metrics"),
            "POST /get_trends": answer("POST", web_url + "/get_trends", ANALYSIS),
            "POST /api/analyses": answer("POST", web_url + "/api/analyses", ANALYSIS),
            "GET /api/analyses/<id>": answer("GET", web_url + analysis_url)}


def what_is_wrong(status: int, body: str, ports: list[int]) -> list[str]:
    """What is wrong with an outage answer: not 503, not JSON saying Redis is the trouble, or naming something internal."""
    problems = internal_detail(body, ports)
    if status != 503:
        problems.append(f"status {status}")
    said = json.loads(body)
    if "Redis" not in said.get("message", said.get("reason", "")):
        problems.append("it does not say that Redis is the trouble")
    return problems


def assert_said_in_words(answers: dict[str, tuple[int, str]], ports: list[int]) -> None:
    wrong = {endpoint: (problems, body) for endpoint, (status, body) in answers.items()
             if (problems := what_is_wrong(status, body, ports))}
    assert not wrong, wrong


def test_during_a_redis_outage_no_answer_names_a_host_port_path_or_exception(tmp_path):
    redis = RedisServer(str(tmp_path / "redis"))
    redis.start()
    web = WebServer(redis.url, tmp_path / "web.log")
    try:
        analysis_url = http_json("POST", web.url + "/api/analyses", ANALYSIS)["status_url"]  # queued: no worker
        redis.stop()
        assert_said_in_words(outage_answers(web.url, analysis_url), [redis.port])
    finally:
        web.stop()
        if redis.process.poll() is None:
            redis.stop()
    log = (tmp_path / "web.log").read_text()
    assert f"127.0.0.1:{redis.port}" in log, "the detail is for the operator, in the log"


def test_with_no_sentinel_answering_the_health_answers_name_no_sentinel_or_exception():
    """redis-py's words for it name each sentinel's address and client; only /livez and /healthz were built from them.

    The API's answers share one message with the single server's outage above, and each request here waits out
    redis-py's retries (about 8 s), so those two are asked, from an app in this process.
    """
    sentinels = [free_port(), free_port()]  # nothing listens there
    client = create_app({"REDIS_URL": f"redis+sentinel://:pw@127.0.0.1:{sentinels[0]},127.0.0.1:{sentinels[1]}/trends/0"}
                        ).test_client()
    answers = {}
    for path in ("/livez", "/healthz"):
        response = client.get(path)
        answers[f"GET {path}"] = response.status_code, response.get_data(as_text=True)
    assert_said_in_words(answers, sentinels)

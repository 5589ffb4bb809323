"""The fetch stage against a real HTTP server on 127.0.0.1 and real files (nothing mocked)."""

from __future__ import annotations

import io
import os
import pickle
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from taxoclip import __version__
from taxoclip.curate.fetch import (
    Fetcher,
    FetchResult,
    backoff_delay,
    cache_path,
    parse_retry_after,
    size_text,
)
from taxoclip.errors import UsageError
from taxoclip.files import temp_sibling

SLOW_SECONDS = 0.1  # the "slow-ish" path: long enough for requests to overlap
COMPANY_WAIT = 10.0  # how long a /together/ request waits for the others it expects
SLEEPY_SECONDS = 1.0  # longer than the test time-out of 0.3 s
BIG_BYTES = 5000  # served by /big*, above the tests' max_bytes of 1000


def jpeg_bytes(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def image_for(name: str) -> bytes:
    """A distinct real JPEG per name, so a mixed-up result shows."""
    seed = sum(name.encode())
    return jpeg_bytes((seed * 37 % 256, seed * 91 % 256, seed * 13 % 256))


class Recorder:
    """What the server saw: hits per path, agents per path, and the requests in flight per
    folder of paths and per (host, folder), with the most ever (keyed by folder so that one
    test's lingering requests do not count in another's).

    A request counts as in flight from when its request line is parsed until just before
    the last byte of its answer is written. The client holds its host slot over all of that
    time, so the server's count can never exceed the client's: no handler still winding
    down after the client has read its answer (and released its slot) is counted."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.hits: Counter[str] = Counter()
        self.in_flight: Counter[object] = Counter()
        self.max_in_flight: Counter[object] = Counter()
        self.user_agents: dict[str, str] = {}
        self.gave_up: set[str] = set()

    def enter(self, path: str, host: str, agent: str) -> int:
        folder = path.rsplit("/", 1)[0]
        with self.lock:
            self.hits[path] += 1
            self.user_agents[path] = agent
            for key in (folder, (host, folder)):
                self.in_flight[key] += 1
                self.max_in_flight[key] = max(self.max_in_flight[key], self.in_flight[key])
            self.lock.notify_all()
            return self.hits[path]

    def leave(self, path: str, host: str) -> None:
        folder = path.rsplit("/", 1)[0]
        with self.lock:
            for key in (folder, (host, folder)):
                self.in_flight[key] -= 1

    def wait_for_company(self, folder: str, want: int, timeout: float) -> None:
        """Hold a request until ``want`` requests of ``folder`` have been in flight at once,
        so overlap shows however loaded the machine is; give up (for the whole folder) after
        ``timeout`` seconds, so a client that never overlaps fails its assertion, not hangs."""
        with self.lock:
            if not self.lock.wait_for(
                lambda: self.max_in_flight[folder] >= want or folder in self.gave_up, timeout
            ):
                self.gave_up.add(folder)


def make_handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def send_body(self, body: bytes, status: int = 200, length: bool = True) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "image/jpeg")
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # (headers and body go straight to the socket: the handler's wfile is unbuffered)
            self.wfile.write(body[:-1])
            self.leave()  # before the last byte: the client cannot have its answer yet
            self.wfile.write(body[-1:])

        def send_status(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.leave()  # before the buffered status line and headers go out
            self.end_headers()

        def leave(self) -> None:
            if not self.left:
                self.left = True
                recorder.leave(self.path, self.headers.get("Host", ""))

        def do_GET(self) -> None:
            path = self.path
            self.left = False
            headers = self.headers
            hit = recorder.enter(path, headers.get("Host", ""), headers.get("User-Agent", ""))
            try:
                self.answer(path, hit)
            finally:
                self.leave()  # an answer cut short (a client that timed out) is over too

        def answer(self, path: str, hit: int) -> None:
            if path.startswith("/img/"):
                self.send_body(image_for(path))
            elif path.startswith("/slow/"):
                time.sleep(SLOW_SECONDS)
                self.send_body(image_for(path))
            elif path.startswith("/together/"):  # /together/<want>/<folder>/<name>
                want = int(path.split("/")[2])
                recorder.wait_for_company(path.rsplit("/", 1)[0], want, COMPANY_WAIT)
                time.sleep(SLOW_SECONDS)  # time for a request over the limit to show up
                self.send_body(image_for(path))
            elif path.startswith("/flaky/"):  # 500 twice, then the image
                if hit <= 2:
                    self.send_status(500)
                else:
                    self.send_body(image_for(path))
            elif path.startswith("/busy/"):  # 429 once asking for 1 s, then the image
                if hit == 1:
                    self.send_status(429, {"Retry-After": "1"})
                else:
                    self.send_body(image_for(path))
            elif path.startswith("/very-busy/"):  # 429 once asking for an hour
                if hit == 1:
                    self.send_status(429, {"Retry-After": "3600"})
                else:
                    self.send_body(image_for(path))
            elif path.startswith("/broken/"):
                self.send_status(500)
            elif path.startswith("/sleepy/"):
                time.sleep(SLEEPY_SECONDS)
                self.send_body(image_for(path))
            elif path.startswith("/big-declared/"):
                self.send_body(b"x" * BIG_BYTES)
            elif path.startswith("/big-undeclared/"):  # no Content-Length: ends at close
                self.send_body(b"x" * BIG_BYTES, length=False)
            else:
                self.send_status(404)

    return Handler


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # a client that timed out closes the socket under a sleeping handler: expected here
        pass


class Site:
    def __init__(self, server: QuietServer, recorder: Recorder) -> None:
        self.server = server
        self.recorder = recorder
        self.port = server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> int:
        return self.recorder.hits[path]


@pytest.fixture(scope="module")
def site():
    recorder = Recorder()
    server = QuietServer(("127.0.0.1", 0), make_handler(recorder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Site(server, recorder)
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # a proxy set in the environment must not sit between the tests and 127.0.0.1
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def quick(**kwargs) -> Fetcher:
    """A Fetcher with test-sized back-off, and a time-out that a loaded machine does not hit
    (the tests that want time-outs set their own)."""
    settings = {"backoff": 0.01, "timeout": 30.0, "max_workers": 8} | kwargs
    return Fetcher(**settings)


# --- HTTP answers ---------------------------------------------------------------------------


def test_ok_returns_the_served_bytes(site):
    result = quick(cache_dir=None).fetch(site.url("/img/a.jpg"))
    assert result == FetchResult(
        site.url("/img/a.jpg"), image_for("/img/a.jpg"), "", 1, False, result.seconds
    )
    assert result.ok
    assert Image.open(io.BytesIO(result.data)).size == (32, 32)
    assert site.hits("/img/a.jpg") == 1


def test_user_agent_names_taxoclip_and_version(site):
    quick().fetch(site.url("/img/agent.jpg"))
    assert f"taxoclip/{__version__}" in site.recorder.user_agents["/img/agent.jpg"]


def test_404_is_a_reason_without_retry(site):
    result = quick(retries=3).fetch(site.url("/missing/x.jpg"))
    assert (result.data, result.error, result.attempts) == (None, "http 404 Not Found", 1)
    assert site.hits("/missing/x.jpg") == 1


def test_500_always_fails_after_all_attempts(site):
    result = quick(retries=3).fetch(site.url("/broken/a.jpg"))
    assert result.error == "http 500 Internal Server Error after 3 attempts"
    assert (result.data, result.attempts) == (None, 3)
    assert site.hits("/broken/a.jpg") == 3


def test_500_twice_then_200_succeeds_on_attempt_3(site):
    result = quick(retries=3).fetch(site.url("/flaky/a.jpg"))
    assert (result.error, result.attempts) == ("", 3)
    assert result.data == image_for("/flaky/a.jpg")
    assert site.hits("/flaky/a.jpg") == 3


def test_too_few_attempts_for_flaky_path(site):
    result = quick(retries=2).fetch(site.url("/flaky/b.jpg"))
    assert result.error == "http 500 Internal Server Error after 2 attempts"


def test_429_honours_retry_after(site):
    fetcher = quick(retries=3)
    start = time.monotonic()
    result = fetcher.fetch(site.url("/busy/a.jpg"))
    elapsed = time.monotonic() - start
    assert (result.error, result.attempts) == ("", 2)
    assert result.data == image_for("/busy/a.jpg")
    # back-off alone would wait ~0.01 s; the server asked for 1 s (no upper bound: a loaded
    # machine may take any time longer)
    assert elapsed >= 0.95
    assert fetcher.stats()["retries"] == 1


def test_retry_after_is_capped(site):
    start = time.monotonic()
    result = quick(max_retry_wait=0.2).fetch(site.url("/very-busy/a.jpg"))
    assert (result.error, result.attempts) == ("", 2)
    # the server asked for an hour: well under a minute shows the cap, however loaded
    assert time.monotonic() - start < 60


def test_slow_server_times_out_with_reason(site):
    fetcher = quick(timeout=0.3, retries=2)
    start = time.monotonic()
    result = fetcher.fetch(site.url("/sleepy/a.jpg"))
    elapsed = time.monotonic() - start
    assert result.error == "timeout after 0.3 s (2 attempts)"
    assert (result.data, result.attempts) == (None, 2)
    # two waits of 0.3 s; the error above already shows the 1 s answers were not awaited
    assert elapsed >= 0.6
    assert fetcher.stats()["failures"] == {"timeout": 1}


def test_connection_refused(site):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nothing listens on the port now
    result = quick(retries=2).fetch(f"http://127.0.0.1:{port}/a.jpg")
    assert result.error == "connection refused (2 attempts)"
    assert result.attempts == 2


@pytest.mark.parametrize("path", ["/big-declared/a", "/big-undeclared/a"])
def test_size_limit(site, path):
    fetcher = quick(max_bytes=1000, retries=3)
    result = fetcher.fetch(site.url(path))
    assert (result.data, result.error, result.attempts) == (None, "too large: > 1000 bytes", 1)
    stats = fetcher.stats()
    assert stats["failures"] == {"too large": 1}
    # a declared length is refused before reading; otherwise reading stops at limit + 1
    assert stats["downloaded_bytes"] == (0 if "undeclared" not in path else 1001)


def test_url_with_space_is_encoded(site):
    result = quick().fetch(site.url("/img/with space.jpg"))
    assert result.data == image_for("/img/with%20space.jpg")
    assert result.url == site.url("/img/with space.jpg")


# --- concurrency ----------------------------------------------------------------------------


# The server counts a request in flight only while the client must still hold its host slot
# (see Recorder), and /together/<want>/ holds requests until <want> of them overlap, so
# "at most the limit" and "up to the limit at once" hold exactly on any machine.


def test_per_host_limit_holds_and_requests_overlap(site):
    urls = [site.url(f"/together/2/limit/{i}.jpg") for i in range(20)]
    start = time.monotonic()
    results = quick(per_host=2, max_workers=8).fetch_many(urls)
    elapsed = time.monotonic() - start
    assert [r.data for r in results] == [image_for(f"/together/2/limit/{i}.jpg") for i in range(20)]
    assert site.recorder.max_in_flight["/together/2/limit"] == 2
    # 20 requests of at least 0.1 s, two at a time, take 1 s at least (no upper bound: the
    # overlap is shown by the in-flight count above, and a loaded machine may be slow)
    assert elapsed >= 0.95


def test_per_host_limit_is_shared_across_concurrent_calls(site):
    fetcher = quick(per_host=2, max_workers=8)
    batches = [[site.url(f"/together/2/shared/{b}-{i}.jpg") for i in range(6)] for b in range(3)]
    outputs: list[list[FetchResult]] = [[] for _ in batches]

    def run(b: int) -> None:
        outputs[b] = fetcher.fetch_many(batches[b])

    threads = [threading.Thread(target=run, args=(b,)) for b in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [len(out) for out in outputs] == [6, 6, 6]
    assert all(r.ok for out in outputs for r in out)
    assert site.recorder.max_in_flight["/together/2/shared"] == 2


def test_limit_is_per_host_not_global(site):
    # 127.0.0.1 and localhost are two hosts to the fetcher, one server here
    folder = "/together/2/twohost"
    urls = [site.url(f"{folder}/{i}.jpg") for i in range(6)]
    urls += [f"http://localhost:{site.port}{folder}/l{i}.jpg" for i in range(6)]
    results = quick(per_host=1, max_workers=8).fetch_many(urls)
    assert all(r.ok for r in results)
    peaks = site.recorder.max_in_flight
    assert peaks[folder] == 2
    for host in ("127.0.0.1", "localhost"):
        assert peaks[(f"{host}:{site.port}", folder)] == 1, host


def test_results_in_input_order_and_duplicates_fetched_once(site, tmp_path):
    local = tmp_path / "local.jpg"
    local.write_bytes(image_for("local"))
    urls = [
        site.url("/slow/order-0.jpg"),
        str(local),
        site.url("/missing/order.jpg"),
        site.url("/img/order-1.jpg"),
        site.url("/slow/order-0.jpg"),  # again
        str(tmp_path / "absent.jpg"),
        site.url("/img/order-2.jpg"),
    ]
    results = quick(retries=1).fetch_many(urls)
    assert [r.url for r in results] == urls
    assert [r.data for r in results] == [
        image_for("/slow/order-0.jpg"),
        image_for("local"),
        None,
        image_for("/img/order-1.jpg"),
        image_for("/slow/order-0.jpg"),
        None,
        image_for("/img/order-2.jpg"),
    ]
    assert [r.error for r in results][2] == "http 404 Not Found"
    assert results[5].error == f"file not found: {tmp_path / 'absent.jpg'}"
    assert site.hits("/slow/order-0.jpg") == 1
    assert results[0] is not results[4]


# --- resume ---------------------------------------------------------------------------------


def test_second_fetcher_resumes_from_cache_and_retries_failures(site, tmp_path):
    cache = tmp_path / "cache"
    good = [site.url(f"/img/resume-{i}.jpg") for i in range(3)]
    bad = [site.url("/missing/resume.jpg"), site.url("/broken/resume.jpg")]
    first = quick(cache_dir=cache, retries=2)
    first_results = first.fetch_many(good + bad)
    assert [r.ok for r in first_results] == [True, True, True, False, False]
    assert not any(r.cached for r in first_results)
    for url in good:
        stored = cache_path(cache, url)
        assert stored.parent.name == stored.name[:2] and stored.suffix == ".bin"
        assert stored.read_bytes() == image_for(url[len(site.base) :])
    assert first.stats()["requests"] == 3 + 1 + 2

    second = quick(cache_dir=cache, retries=2)  # e.g. after a crash
    results = second.fetch_many(good + bad)
    assert [r.cached for r in results] == [True, True, True, False, False]
    assert [r.data for r in results[:3]] == [image_for(u[len(site.base) :]) for u in good]
    assert [r.attempts for r in results[:3]] == [0, 0, 0]
    for url in good:  # no request for what the first run got
        assert site.hits(url[len(site.base) :]) == 1
    # failures were not cached: asked again
    assert site.hits("/missing/resume.jpg") == 2
    assert site.hits("/broken/resume.jpg") == 4
    stats = second.stats()
    assert (stats["requests"], stats["cache_hits"]) == (1 + 2, 3)
    assert stats["cache_bytes"] == sum(len(r.data) for r in results[:3])
    assert stats["failures"] == {"http 404": 1, "http 500": 1}


def test_partial_temp_file_is_ignored_and_replaced(site, tmp_path):
    cache = tmp_path / "cache"
    url = site.url("/img/killed.jpg")
    final = cache_path(cache, url)
    final.parent.mkdir(parents=True)
    # what a writer killed mid-write leaves: a temp file beside where the download would go
    leftover = temp_sibling(final)
    leftover.write_bytes(image_for("/img/killed.jpg")[:100])
    an_hour_ago = time.time() - 3600
    os.utime(leftover, (an_hour_ago, an_hour_ago))

    result = quick(cache_dir=cache).fetch(url)
    assert (result.cached, result.attempts) == (False, 1)
    assert result.data == image_for("/img/killed.jpg")
    assert final.read_bytes() == image_for("/img/killed.jpg")
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]
    assert quick(cache_dir=cache).fetch(url).cached


def test_unwritable_cache_does_not_fail_the_download(site, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    fetcher = quick(cache_dir=blocker)
    result = fetcher.fetch(site.url("/img/nocache.jpg"))
    assert result.data == image_for("/img/nocache.jpg")
    assert fetcher.stats()["cache_write_errors"] == 1


# --- local files ----------------------------------------------------------------------------


def test_local_paths_and_file_urls(tmp_path):
    image = tmp_path / "a b.jpg"
    image.write_bytes(image_for("a"))
    (tmp_path / "folder").mkdir()
    cache = tmp_path / "cache"
    fetcher = quick(cache_dir=cache)
    urls = [
        str(image),
        image.as_uri(),
        str(tmp_path / "missing.jpg"),
        (tmp_path / "missing.jpg").as_uri(),
        str(tmp_path / "folder"),
        "relative/path.jpg",
        "ftp://example.org/a.jpg",
        "",
    ]
    results = fetcher.fetch_many(urls)
    assert [r.data for r in results[:2]] == [image_for("a")] * 2
    assert [r.error for r in results] == [
        "",
        "",
        f"file not found: {tmp_path / 'missing.jpg'}",
        f"file not found: {tmp_path / 'missing.jpg'}",
        f"not a file: {tmp_path / 'folder'}",
        "unsupported url: relative/path.jpg",
        "unsupported url: ftp://example.org/a.jpg",
        "empty url",
    ]
    assert not any(r.cached for r in results)
    assert not cache.exists()  # local files are not copied
    stats = fetcher.stats()
    assert (stats["urls"], stats["ok"], stats["failed"]) == (8, 2, 6)
    assert stats["local_bytes"] == 2 * len(image_for("a"))
    assert stats["failures"] == {"file not found": 2, "not a file": 1, "unsupported url": 3}


def test_local_size_limit_and_empty_file(tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 2000)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    results = quick(max_bytes=1000).fetch_many([str(big), str(empty)])
    assert [r.error for r in results] == ["too large: > 1000 bytes", f"empty file: {empty}"]


# --- plumbing -------------------------------------------------------------------------------


def test_pickles_after_use_and_keeps_its_settings(site):
    fetcher = quick(per_host=3, timeout=2.0)
    fetcher.fetch(site.url("/img/pickle.jpg"))
    clone = pickle.loads(pickle.dumps(fetcher))
    assert (clone.per_host, clone.timeout, clone.backoff) == (3, 2.0, 0.01)
    assert clone.fetch(site.url("/img/pickle.jpg")).data == image_for("/img/pickle.jpg")
    assert clone.stats()["requests"] == 1  # counters belong to the process that counted


def test_works_in_a_child_forked_while_a_lock_was_held(tmp_path):
    image = tmp_path / "fork.jpg"
    image.write_bytes(image_for("fork"))
    fetcher = quick()
    fetcher.fetch(str(image))
    with fetcher._lock:  # another thread mid-update at the moment of the fork
        pid = os.fork()
        if pid == 0:  # child: would hang forever on the inherited lock without the reset
            code = 1
            try:
                code = 0 if fetcher.fetch(str(image)).data == image_for("fork") else 1
            finally:
                os._exit(code)  # never return into pytest in the child
    deadline = time.monotonic() + 60  # a hang guard only: a loaded machine may be slow
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on a lock inherited from the parent")
    assert os.waitstatus_to_exitcode(status) == 0


def test_bad_settings_are_usage_errors():
    for bad in ({"per_host": 0}, {"retries": 0}, {"timeout": 0}, {"max_bytes": 0}):
        with pytest.raises(UsageError):
            Fetcher(None, **bad)


def test_helpers():
    assert size_text(50 * 2**20) == "50 MiB"
    assert size_text(1000) == "1000 bytes"
    assert size_text(2048) == "2 KiB"
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    delays = [backoff_delay("http://h/a", attempt, 0.5) for attempt in (1, 2, 3)]
    assert delays == [backoff_delay("http://h/a", attempt, 0.5) for attempt in (1, 2, 3)]
    for attempt, delay in enumerate(delays, start=1):
        assert 0.5 * 2 ** (attempt - 1) <= delay <= 0.5 * 2 ** (attempt - 1) * 1.25

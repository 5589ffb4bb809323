"""The fetch stage: bytes for every record's url, from local files or http(s), never raising.

A url is an absolute local path, a ``file://`` URL or an ``http(s)://`` URL. Each url gets a
``FetchResult``; a url that cannot be fetched gets a reason string (``error``) so the batch
goes on and the record can be rejected at stage ``"fetch"``.

HTTP is polite and restartable: at most ``per_host`` requests in flight per host, retries
with exponential back-off on time-outs, connection errors, 429 and 5xx (``Retry-After``
honoured), and, with a ``cache_dir``, every download kept content-addressed by the sha256 of
its URL so a rerun after a crash asks the network only for what it has not got yet.
"""

from __future__ import annotations

import email.utils
import hashlib
import http
import http.client
import logging
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from taxoclip import __version__
from taxoclip.errors import UsageError
from taxoclip.files import remove_stale_temps, replacing

log = logging.getLogger(__name__)

USER_AGENT = f"taxoclip/{__version__} (biodiversity image curation; Python urllib)"

_READ_CHUNK = 1 << 16
# A temp file is written in one go from bytes already in memory, so it lives for milliseconds;
# one older than this was left by a killed process and may be removed.
_STALE_TEMP_SECONDS = 60.0


@dataclass
class FetchResult:
    """What fetching one url gave: ``data`` when ``error`` is empty, else the reason.

    ``attempts`` counts requests made (0 for a cache hit, 1 for a local read); ``seconds`` is
    the wall time spent on the url, waits for its host and back-off included.
    """

    url: str
    data: bytes | None
    error: str = ""
    attempts: int = 0
    cached: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


class _Failed(Exception):
    """One attempt's failure: a short kind (for counters), the reason, whether to retry."""

    def __init__(
        self, kind: str, reason: str, retryable: bool = False, retry_after: float | None = None
    ):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


# --- pure helpers ---------------------------------------------------------------------------


def cache_path(cache_dir: Path, url: str) -> Path:
    """Where a download of ``url`` is kept: ``cache_dir/ab/abcdef….bin`` (sha256 of the URL)."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
    return cache_dir / digest[:2] / f"{digest}.bin"


def url_kind(url: str) -> str:
    """``"local"``, ``"http"`` or ``"unsupported"`` for a record's url."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return "http"
    if scheme == "file" or (not scheme and os.path.isabs(url)):
        return "local"
    return "unsupported"


def local_path(url: str) -> Path:
    """The filesystem path of an absolute path or a ``file://`` URL."""
    if not url.lower().startswith("file:"):
        return Path(url)
    parts = urllib.parse.urlsplit(url)
    return Path(urllib.request.url2pathname(parts.path))


def host_key(url: str) -> str:
    """The host whose request limit a URL counts against (lower case, port ignored)."""
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def request_url(url: str) -> str:
    """``url`` as sent on the wire: spaces and non-ASCII percent-encoded, fragment dropped.

    Sources give URLs as people typed them; existing ``%xx`` escapes are kept as they are.
    """
    parts = urllib.parse.urlsplit(url)
    path = urllib.parse.quote(parts.path, safe="/%:@!$&'()*+,;=~")
    query = urllib.parse.quote(parts.query, safe="/%:@!$&'()*+,;=~?")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def size_text(n_bytes: int) -> str:
    """``50 MiB`` for an exact power-of-two multiple, else the byte count."""
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= factor and n_bytes % factor == 0:
            return f"{n_bytes // factor} {unit}"
    return f"{n_bytes} bytes"


def backoff_delay(url: str, attempt: int, backoff: float) -> float:
    """Exponential back-off after ``attempt`` (1-based) with up to 25 % jitter.

    The jitter comes from the URL, not a random generator, so reruns wait the same while
    requests to one host that failed together still spread out.
    """
    jitter = zlib.crc32(f"{url}#{attempt}".encode()) / 2**32 * 0.25
    return backoff * 2 ** (attempt - 1) * (1.0 + jitter)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _attempts_text(attempts: int) -> str:
    return f"{attempts} attempt" + ("" if attempts == 1 else "s")


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return True
    reason = getattr(exc, "reason", None)
    return isinstance(reason, (TimeoutError, socket.timeout))


def _classify_http_error(exc: urllib.error.HTTPError) -> _Failed:
    code = exc.code
    phrase = (exc.reason or "").strip() if isinstance(exc.reason, str) else ""
    if not phrase:
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
    reason = f"http {code} {phrase}".rstrip()
    retryable = code == 429 or code >= 500
    retry_after = parse_retry_after(exc.headers.get("Retry-After")) if exc.headers else None
    return _Failed(f"http {code}", reason, retryable, retry_after)


def _classify_network_error(exc: BaseException, url: str) -> _Failed:
    """A network-level exception as a failure; everything transient is retryable."""
    if _is_timeout(exc):
        return _Failed("timeout", "timeout", retryable=True)
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, http.client.InvalidURL):
        return _Failed("bad url", f"bad url: {cause}")
    if isinstance(cause, ConnectionRefusedError):
        return _Failed("connection refused", "connection refused", retryable=True)
    if isinstance(cause, ssl.SSLError):
        # certificate and protocol problems do not go away by asking again
        return _Failed("tls error", f"tls error: {cause}")
    if isinstance(cause, socket.gaierror):
        return _Failed("host not found", f"host not found: {host_key(url)}", retryable=True)
    if isinstance(cause, (OSError, http.client.HTTPException)):
        detail = str(cause) or type(cause).__name__
        return _Failed("connection error", f"connection error: {detail}", retryable=True)
    return _Failed("error", f"{type(cause).__name__}: {cause}")


# --- the fetcher ----------------------------------------------------------------------------


class Fetcher:
    """Fetches urls in parallel with per-host limits, retries and an on-disk resume cache.

    ``retries`` is the number of attempts in all per URL (1 = no retry). ``timeout`` is how
    long one request may stall (connecting, or between reads). Constructor arguments are
    plain values and locks and thread pools are made on first use in each process, so a
    Fetcher can be pickled into Ray workers or survive a fork.
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        per_host: int = 8,
        max_workers: int = 32,
        retries: int = 3,
        backoff: float = 0.5,
        timeout: float = 30.0,
        max_bytes: int = 50 * 2**20,
        max_retry_wait: float = 60.0,
    ):
        if per_host < 1 or max_workers < 1:
            raise UsageError(
                f"fetch: per_host ({per_host}) and max_workers ({max_workers}) must be >= 1"
            )
        if retries < 1:
            raise UsageError(f"fetch: retries ({retries}) counts attempts and must be >= 1")
        if backoff < 0 or max_retry_wait < 0:
            raise UsageError("fetch: backoff and max_retry_wait must be >= 0")
        if timeout <= 0:
            raise UsageError(f"fetch: timeout ({timeout}) must be > 0")
        if max_bytes < 1:
            raise UsageError(f"fetch: max_bytes ({max_bytes}) must be >= 1")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.per_host = per_host
        self.max_workers = max_workers
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_retry_wait = max_retry_wait
        self._reset_runtime()

    # Runtime state (locks, semaphores, counters) belongs to one process: it is dropped when
    # pickled and remade after a fork, where a lock held by another thread would never free.
    def _reset_runtime(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._host_slots: dict[str, threading.BoundedSemaphore] = {}
        self._counts: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._opener: urllib.request.OpenerDirector | None = None

    def _check_process(self) -> None:
        if self._pid != os.getpid():
            self._reset_runtime()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.__getstate__().items())
        return f"Fetcher({args})"

    # --- public API -------------------------------------------------------------------------

    def fetch(self, url: str) -> FetchResult:
        """Fetch one url (see ``fetch_many``)."""
        self._check_process()
        return self._fetch_one(url)

    def fetch_many(self, urls: Sequence[str]) -> list[FetchResult]:
        """Fetch every url, in parallel; results in input order, one per url.

        Repeated urls are fetched once. Work is handed out round-robin over hosts so one busy
        host waiting on its limit does not hold up the others.
        """
        self._check_process()
        urls = list(urls)
        unique = list(dict.fromkeys(urls))
        if len(unique) <= 1:
            done = {u: self._fetch_one(u) for u in unique}
        else:
            by_host: dict[str, list[str]] = defaultdict(list)
            for u in unique:
                by_host[host_key(u) if url_kind(u or "") == "http" else ""].append(u)
            interleaved = [
                u for group in zip_longest(*by_host.values()) for u in group if u is not None
            ]
            workers = min(self.max_workers, len(unique))
            with ThreadPoolExecutor(workers, thread_name_prefix="taxoclip-fetch") as pool:
                done = dict(zip(interleaved, pool.map(self._fetch_one, interleaved), strict=True))
        results = []
        for u in urls:
            r = done[u]
            # each record gets its own result object; the bytes are shared
            results.append(FetchResult(r.url, r.data, r.error, r.attempts, r.cached, r.seconds))
        return results

    def stats(self) -> dict[str, Any]:
        """Counters since this Fetcher was made (in this process): for logs and benchmarks."""
        self._check_process()
        with self._lock:
            counts = dict(self._counts)
            failures = dict(sorted(self._failures.items()))
        keys = (
            "urls",
            "ok",
            "failed",
            "requests",
            "retries",
            "downloaded_bytes",
            "cache_hits",
            "cache_bytes",
            "cache_writes",
            "cache_write_errors",
            "local_reads",
            "local_bytes",
        )
        out: dict[str, Any] = {k: counts.get(k, 0) for k in keys}
        out["failures"] = failures
        return out

    # --- one url ----------------------------------------------------------------------------

    def _count(self, **amounts: int) -> None:
        with self._lock:
            self._counts.update(amounts)

    def _fetch_one(self, url: str | None) -> FetchResult:
        start = time.monotonic()
        url = url or ""
        kind = url_kind(url) if url else "empty"
        try:
            if kind == "local":
                fetched, failure_kind = self._read_local(url)
            elif kind == "http":
                fetched, failure_kind = self._fetch_http(url)
            else:
                reason = "empty url" if kind == "empty" else f"unsupported url: {url[:200]}"
                fetched, failure_kind = FetchResult(url, None, reason), "unsupported url"
        except Exception as exc:
            # a bug here must not sink the other records of the batch, but must be seen
            log.exception("fetch: unexpected error for %s", url)
            reason = f"unexpected error: {type(exc).__name__}: {exc}"
            fetched, failure_kind = FetchResult(url, None, reason), "unexpected"
        fetched.seconds = time.monotonic() - start
        with self._lock:
            self._counts["urls"] += 1
            if fetched.error:
                self._counts["failed"] += 1
                self._failures[failure_kind] += 1
            else:
                self._counts["ok"] += 1
        return fetched

    def _read_local(self, url: str) -> tuple[FetchResult, str]:
        path = local_path(url)
        try:
            with open(path, "rb") as f:
                data = f.read(self.max_bytes + 1)
        except FileNotFoundError:
            return FetchResult(url, None, f"file not found: {path}", attempts=1), "file not found"
        except IsADirectoryError:
            return FetchResult(url, None, f"not a file: {path}", attempts=1), "not a file"
        except PermissionError:
            return FetchResult(
                url, None, f"permission denied: {path}", attempts=1
            ), "permission denied"
        except OSError as exc:
            reason = f"cannot read {path}: {exc.strerror or exc}"
            return FetchResult(url, None, reason, attempts=1), "unreadable"
        self._count(local_reads=1, local_bytes=len(data))
        if len(data) > self.max_bytes:
            return FetchResult(
                url, None, f"too large: > {size_text(self.max_bytes)}", attempts=1
            ), "too large"
        if not data:
            return FetchResult(url, None, f"empty file: {path}", attempts=1), "empty"
        return FetchResult(url, data, attempts=1), ""

    def _fetch_http(self, url: str) -> tuple[FetchResult, str]:
        cached = self._cache_read(url)
        if cached is not None:
            return FetchResult(url, cached, cached=True), ""
        slots = self._host_slot(host_key(url))
        attempt = 0
        while True:
            attempt += 1
            try:
                with slots:
                    data = self._request(url)
            except _Failed as failure:
                if failure.retryable and attempt < self.retries:
                    wait = backoff_delay(url, attempt, self.backoff)
                    if failure.retry_after is not None:
                        wait = max(wait, failure.retry_after)
                    wait = min(wait, self.max_retry_wait)
                    log.debug("fetch %s: %s; retry in %.2f s", url, failure.reason, wait)
                    self._count(retries=1)
                    # the host slot is free while we wait, so others may use it
                    time.sleep(wait)
                    continue
                return FetchResult(
                    url, None, self._final_reason(failure, attempt), attempts=attempt
                ), failure.kind
            self._cache_write(url, data)
            return FetchResult(url, data, attempts=attempt), ""

    def _final_reason(self, failure: _Failed, attempts: int) -> str:
        if not failure.retryable:
            return failure.reason
        if failure.kind == "timeout":
            return f"timeout after {float(self.timeout)} s ({_attempts_text(attempts)})"
        if failure.kind.startswith("http "):
            return f"{failure.reason} after {_attempts_text(attempts)}"
        return f"{failure.reason} ({_attempts_text(attempts)})"

    def _host_slot(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            slot = self._host_slots.get(host)
            if slot is None:
                slot = self._host_slots[host] = threading.BoundedSemaphore(self.per_host)
            return slot

    def _request(self, url: str) -> bytes:
        """One GET: the body, or ``_Failed``."""
        if self._opener is None:
            self._opener = urllib.request.build_opener()
        request = urllib.request.Request(request_url(url), headers={"User-Agent": USER_AGENT})
        self._count(requests=1)
        received = 0
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise _Failed("too large", f"too large: > {size_text(self.max_bytes)}")
                chunks = []
                while received <= self.max_bytes:
                    chunk = response.read(min(_READ_CHUNK, self.max_bytes + 1 - received))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    received += len(chunk)
        except _Failed:
            raise
        except urllib.error.HTTPError as exc:
            exc.close()
            raise _classify_http_error(exc) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _classify_network_error(exc, url) from None
        except ValueError as exc:
            raise _Failed("bad url", f"bad url: {exc}") from None
        finally:
            self._count(downloaded_bytes=received)
        if received > self.max_bytes:
            raise _Failed("too large", f"too large: > {size_text(self.max_bytes)}")
        if not received:
            raise _Failed("empty", "empty body")
        return b"".join(chunks)

    # --- resume cache -----------------------------------------------------------------------

    def _cache_read(self, url: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        try:
            data = cache_path(self.cache_dir, url).read_bytes()
        except OSError:
            return None
        self._count(cache_hits=1, cache_bytes=len(data))
        return data

    def _cache_write(self, url: str, data: bytes) -> None:
        """Keep a download; written to a temp file then renamed, so it is whole or absent."""
        if self.cache_dir is None:
            return
        final = cache_path(self.cache_dir, url)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(final, _STALE_TEMP_SECONDS)  # a killed writer's, never a live one's
            with replacing(final, durable=True) as temp:
                temp.write_bytes(data)
        except OSError as exc:
            # the download itself is good; only the resume copy is lost
            log.warning("fetch: cannot cache %s in %s: %s", url, self.cache_dir, exc)
            self._count(cache_write_errors=1)
            return
        self._count(cache_writes=1)

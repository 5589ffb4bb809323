"""The runner of ``taxoclip serve``: bind the port, load the model once, serve until stopped.

The socket is bound before the model loads, so a taken port fails at once with the
address in the message (exit 1) instead of after a minute of loading. uvicorn runs the
app on that socket, programmatically.
"""

from __future__ import annotations

import errno
import signal
import socket
import threading

from taxoclip.errors import InputError, UsageError

from .config import ServeConfig, ServeResult

SERVE_EXTRA = "pip install 'taxoclip[serve]'"


def require_serve_packages() -> None:
    missing = []
    for module, package in (
        ("fastapi", "fastapi"),
        ("uvicorn", "uvicorn"),
        ("multipart", "python-multipart"),
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise UsageError(f"taxoclip serve needs {', '.join(missing)}: {SERVE_EXTRA}")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; :class:`InputError` naming them when refused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = "the address is already in use (another server?); choose another --port"
        elif exc.errno == errno.EACCES:
            reason = "permission denied (ports below 1024 need privileges); choose another --port"
        else:
            reason = exc.strerror or str(exc)
        raise InputError(f"cannot listen on {host}:{port}: {reason}") from exc
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def serve_forever(
    app,
    sock: socket.socket,
    *,
    access_log: bool = False,
    log_level: str = "warning",
    server_box: list | None = None,
) -> None:
    """Run ``app`` with uvicorn on ``sock`` until Ctrl-C/SIGTERM (or ``should_exit``)."""
    import uvicorn

    config = uvicorn.Config(
        app, log_level=log_level, access_log=access_log, lifespan="on", timeout_graceful_shutdown=10
    )
    server = uvicorn.Server(config)
    if server_box is not None:
        server_box.append(server)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for
    # the program: here that is the normal way to stop, not an interruption.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stopped) if in_main else None
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


class _Stop(Exception):
    pass


def _stopped(signum, frame):
    raise _Stop


def run_serve(config: ServeConfig) -> ServeResult:
    require_serve_packages()
    sock = bind_socket(config.host, config.port)
    try:
        from PIL import Image

        from .app import create_app
        from .engine import Engine
        from .uploads import Limits

        if config.max_pixels > (Image.MAX_IMAGE_PIXELS or 0):
            Image.MAX_IMAGE_PIXELS = config.max_pixels  # our limit, not PIL's, decides
        engine = Engine(
            config.model,
            config.index,
            pretrained=config.pretrained,
            runtime=config.runtime,
            device=config.device,
        )
        limits = Limits(
            max_upload_bytes=config.max_upload_bytes,
            max_files=config.max_files,
            max_pixels=config.max_pixels,
        )
        app = create_app(
            engine,
            limits,
            batch_wait_ms=config.batch_wait_ms,
            max_batch=config.max_batch,
            queue_timeout=config.queue_timeout,
        )
        url = url_of(sock)
        print(
            f"taxoclip serve: {url}/ — model {config.model}, {len(engine.index)} taxa, "
            f"runtime {engine.runtime}, loaded in {engine.load_seconds:.1f} s; Ctrl-C stops",
            flush=True,
        )
        serve_forever(
            app,
            sock,
            access_log=config.access_log,
            log_level="info" if config.access_log else "warning",
        )
    finally:
        sock.close()
    stats = app.state.batcher.stats
    return ServeResult(url=url, requests=stats.requests, images=stats.images, batches=stats.batches)

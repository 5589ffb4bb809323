"""A real uvicorn server on 127.0.0.1 (a free port, a background thread) over a tiny model."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("fastapi", reason="taxoclip serve needs the [serve] extra")
pytest.importorskip("uvicorn", reason="taxoclip serve needs the [serve] extra")

from tests.helpers import saved_model  # noqa: E402

from taxoclip.synth import SynthConfig, generate  # noqa: E402


@pytest.fixture(scope="session")
def synth_serve(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-data") / "synth"
    generate(
        out, SynthConfig(species=12, images_per_species=2, image_size=48, seed=5), progress=False
    )
    return out


@pytest.fixture(scope="session")
def serve_model(tmp_path_factory):
    return saved_model(tmp_path_factory.mktemp("serve-models") / "t224", "taxoclip-vit-t224")


@pytest.fixture(scope="session")
def serve_index(serve_model, synth_serve, tmp_path_factory):
    from taxoclip.predict import build_index, read_taxa
    from taxoclip.runtime import open_text_encoder

    text = open_text_encoder(str(serve_model), "torch")
    index = build_index(text, read_taxa(synth_serve / "species.csv"))
    return index.save(tmp_path_factory.mktemp("serve-index") / "t224")


@pytest.fixture(scope="session")
def engine(serve_model, serve_index):
    from taxoclip.serve.engine import Engine

    return Engine(str(serve_model), str(serve_index), runtime="torch", device="cpu")


@pytest.fixture(scope="session")
def images(synth_serve):
    return sorted((synth_serve / "test" / "images").rglob("*.jpg"))


class Server:
    """``create_app(...)`` served by uvicorn in a thread; ``url``, ``app``, ``stop()``."""

    def __init__(self, app) -> None:
        from taxoclip.serve.run import bind_socket, serve_forever, url_of

        self.app = app
        self.sock = bind_socket("127.0.0.1", 0)
        self.url = url_of(self.sock)
        self._box: list = []
        self.thread = threading.Thread(
            target=serve_forever,
            args=(app, self.sock),
            kwargs={"server_box": self._box},
            daemon=True,
        )
        self.thread.start()
        for _ in range(6000):  # until uvicorn says it started (no fixed sleep)
            if self._box and self._box[0].started:
                return
            if not self.thread.is_alive():
                raise RuntimeError("the server thread died on start")
            time.sleep(0.01)
        raise RuntimeError("the server did not start within a minute")

    def stop(self) -> None:
        if self._box:
            self._box[0].should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()


@pytest.fixture
def serve(engine):
    """Start a server over the shared engine (or another) with these create_app options."""
    from taxoclip.serve.app import create_app

    servers: list[Server] = []

    def start(engine_=None, **options) -> Server:
        server = Server(create_app(engine_ or engine, **options))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()

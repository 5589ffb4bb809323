"""Test-wide settings."""

import atexit
import os
import shutil
import tempfile

from hypothesis import settings

# Property tests explore the same examples on every run, so CI cannot fail by chance on an
# example no developer saw; widen locally with HYPOTHESIS_PROFILE=explore. No per-example
# deadline: on a loaded machine a slow example is not a failure.
settings.register_profile("ci", derandomize=True, max_examples=200, deadline=None)
settings.register_profile("explore", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Caches (evaluation features, custom-label embeddings) go to a throw-away folder, never to
# the developer's ~/.cache; subprocesses inherit it.
_CACHE = tempfile.mkdtemp(prefix="taxoclip-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

# Ray starts its workers at nice 15; on a loaded machine (both cores kept busy) they
# would get almost no CPU and the curation tests would crawl. Clusters started by tests
# (ray.cluster_utils) read this too.
os.environ.setdefault("RAY_worker_niceness", "0")

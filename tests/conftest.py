"""Test-wide settings."""

import os

from hypothesis import settings

# Property tests explore the same examples on every run, so CI cannot fail by chance on an
# example no developer saw; widen locally with HYPOTHESIS_PROFILE=explore.
settings.register_profile("ci", derandomize=True, max_examples=200)
settings.register_profile("explore", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

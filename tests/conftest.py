"""Shared test settings: synthetic data is cached in a per-session temp folder."""

import os
import tempfile

os.environ.setdefault("STEERJAX_CACHE", tempfile.mkdtemp(prefix="steerjax-test-cache-"))

"""Shared test settings, applied before JAX is imported anywhere in the session.

Synthetic data is cached in a per-session temp folder, and XLA's persistent compilation cache
lives there too, so the many subprocess runs that compile the same train step compile it once.
"""

import os
import tempfile

_cache = os.environ.setdefault("STEERJAX_CACHE", tempfile.mkdtemp(prefix="steerjax-test-cache-"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_cache, "xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

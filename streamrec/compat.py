"""Python-version shims, one place: streamrec supports 3.10 (Ubuntu 22.04's python3) and newer."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:  # pragma: no cover - exercised by the Python 3.10 check (tests/integration/test_setup.py)
    from async_timeout import timeout  # the aio-libs backport asyncio.timeout was taken from

__all__ = ["timeout"]

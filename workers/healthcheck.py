"""``python -m workers.healthcheck [URL]``: exit 0 when URL answers 2xx within 3 s, else 1.

The image's HEALTHCHECK (no curl or wget in a slim image). Default URL: the worker's readiness,
``http://127.0.0.1:$RUNBOOK_HEALTH_PORT/readyz``; the gateway and the codec server pass their own.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def default_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('RUNBOOK_HEALTH_PORT') or 9465}/readyz"


def check(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a local, fixed URL)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else default_url()
    ok = check(url)
    if not ok:
        print(f"unhealthy: {url}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

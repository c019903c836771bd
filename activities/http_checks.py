"""Real HTTP health checks and smoke requests (httpx).

``http_probe`` makes one request and reports what it saw; a failed check is a *result* (``ok=False`` with an
``error`` a person can act on), not an exception, because the caller (a workflow) decides what a failed check
means. Only a request that can never succeed (a malformed URL) raises ``INVALID_INPUT``.

``http_check_suite`` runs named checks up to ``attempts`` times, ``interval_seconds`` apart, re-trying only the
checks that have not passed yet. It heartbeats between attempts with the results so far and resumes from them if
the activity is retried, so a worker restart does not repeat checks that already passed.
"""

from __future__ import annotations

import functools
import socket
import ssl
import time
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from core import errors
from core.http_checks import (
    BODY_EXCERPT_CHARS,
    HttpCheckResult,
    HttpProbeInput,
    HttpProbeResult,
    HttpSuiteInput,
    HttpSuiteResult,
)
from core.rotation import TlsServed, TlsServedInput, serial_of

USER_AGENT = "runbook-automation/http-checks"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one TLS context for its HTTP clients, with httpx's defaults (certifi's CA bundle, or
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``). Building one loads the whole CA bundle, tens of ms of CPU, and every
    ``httpx.Client`` built without ``verify`` builds its own: a worker's activity objects built three. A context is
    read-only once built and safe to share between clients and threads."""
    return httpx.create_ssl_context()


def http_client(**options: Any) -> httpx.Client:
    """``httpx.Client(**options)`` on the shared TLS context (a caller's own ``verify`` wins)."""
    options.setdefault("verify", tls_context())
    return httpx.Client(**options)


class HttpCheckActivities:
    """HTTP checks over one shared ``httpx.Client`` (connection pooling; the worker may hand in its own client,
    e.g. with a corporate CA bundle or a proxy)."""

    def __init__(self, client: httpx.Client | None = None) -> None:
        self._client = client or http_client(follow_redirects=False, headers={"User-Agent": USER_AGENT})

    # ------------------------------------------------------------------ one request
    def probe(self, req: HttpProbeInput) -> HttpProbeResult:
        """One request; never raises for a failed check (only for a URL that can never work)."""
        try:
            url = httpx.URL(req.url)
        except (httpx.InvalidURL, TypeError) as err:
            raise ApplicationError(f"not a valid URL {req.url!r}: {err}", type=errors.INVALID_INPUT, non_retryable=True) from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ApplicationError(
                f"not an absolute http(s) URL: {req.url!r}", type=errors.INVALID_INPUT, non_retryable=True
            )
        started = time.perf_counter()
        try:
            response = self._client.request(req.method, url, headers=req.headers, timeout=req.timeout_seconds)
        except httpx.TimeoutException:
            return HttpProbeResult(
                url=req.url,
                ok=False,
                latency_ms=_ms(started),
                error=f"no answer within {req.timeout_seconds:g}s from {req.url}",
            )
        except httpx.HTTPError as err:
            return HttpProbeResult(
                url=req.url,
                ok=False,
                latency_ms=_ms(started),
                error=f"cannot reach {req.url}: {type(err).__name__}: {err}",
            )
        latency = _ms(started)
        body = response.text if req.method != "HEAD" else ""
        excerpt = body[:BODY_EXCERPT_CHARS]
        error = None
        if response.status_code != req.expect_status:
            error = f"{req.method} {req.url} answered {response.status_code}, expected {req.expect_status}"
        elif req.expect_body is not None and req.expect_body not in body:
            error = f"{req.method} {req.url} answered {response.status_code} but the body lacks {req.expect_body!r}"
        return HttpProbeResult(
            url=req.url,
            ok=error is None,
            status=response.status_code,
            latency_ms=latency,
            error=error,
            body_excerpt=excerpt,
        )

    @activity.defn(name="http_probe")
    def http_probe(self, req: HttpProbeInput) -> HttpProbeResult:
        return self.probe(req)

    # ------------------------------------------------------------------ a suite with retries
    @activity.defn(name="http_check_suite")
    def http_check_suite(self, req: HttpSuiteInput) -> HttpSuiteResult:
        names = [c.name for c in req.checks]
        if len(set(names)) != len(names):
            raise ApplicationError(
                f"check names must be unique, got {names}", type=errors.INVALID_INPUT, non_retryable=True
            )
        results: dict[str, HttpCheckResult] = {}
        first_attempt = 1
        details = _heartbeat_details()
        if details:  # resume after a retry: keep what already passed, continue the attempt count
            first_attempt = int(details.get("attempt", 0)) + 1
            for raw in details.get("results", []):
                result = HttpCheckResult.model_validate(raw)
                if result.name in names:
                    results[result.name] = result
        for attempt in range(first_attempt, req.attempts + 1):
            for check in req.checks:
                previous = results.get(check.name)
                if previous is not None and previous.passed:
                    continue
                outcome = self.probe(check.probe())
                results[check.name] = HttpCheckResult(
                    name=check.name, passed=outcome.ok, attempts=attempt, last=outcome
                )
            progress = {"attempt": attempt, "results": [r.model_dump(mode="json") for r in results.values()]}
            _heartbeat(progress)
            if all(r.passed for r in results.values()) or attempt == req.attempts:
                break
            _sleep(req.interval_seconds, progress)
        ordered = [results[n] for n in names if n in results]
        return HttpSuiteResult(passed=all(r.passed for r in ordered), results=ordered)


    # ------------------------------------------------------------------ TLS: which certificate an endpoint presents
    @activity.defn
    def tls_wait_serial(self, req: TlsServedInput) -> TlsServed:
        """Handshake with every endpoint (heartbeating) until all present the certificate ``serial`` (the chain is
        not verified: this asks which certificate is served, not whether to trust it); VerificationFailed at the
        deadline, naming what each endpoint presented."""
        deadline = time.monotonic() + req.timeout_seconds
        endpoints = [e for e in req.endpoints if e.strip()]
        while True:
            seen = {e: _served_serial(e) for e in endpoints}
            pending = {e: s for e, s in seen.items() if s != req.serial}
            if not pending:
                return TlsServed(serials=seen)
            activity.heartbeat(pending)
            if time.monotonic() >= deadline:
                said = "; ".join(f"{e} presents {s}" for e, s in pending.items())
                raise ApplicationError(f"endpoints not on certificate {req.serial} after {req.timeout_seconds:g}s: {said}",
                                       type=errors.VERIFICATION_FAILED, non_retryable=True)
            time.sleep(req.poll_seconds)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _in_activity() -> bool:
    try:
        activity.info()
    except RuntimeError:
        return False
    return True


def _heartbeat(details: dict) -> None:
    if _in_activity():
        activity.heartbeat(details)


def _heartbeat_details() -> dict | None:
    if not _in_activity():
        return None
    details = activity.info().heartbeat_details
    if details and isinstance(details[0], dict):
        return details[0]
    return None


def _sleep(seconds: float, progress: dict) -> None:
    """Wait between attempts, heartbeating the progress so far, and stop early if the activity is cancelled."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if _in_activity():
            if activity.is_cancelled():
                raise CancelledError("HTTP checks cancelled")
            activity.heartbeat(progress)
        time.sleep(min(left, 0.5))


def _served_serial(endpoint: str) -> str:
    host, _, port = endpoint.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, int(port)), timeout=5) as sock, \
                context.wrap_socket(sock, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as err:
        return f"nothing ({type(err).__name__}: {err})"
    return serial_of(der) if der else "nothing (no certificate)"

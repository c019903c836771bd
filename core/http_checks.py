"""HTTP health checks and smoke requests: the inputs and results of the ``http_probe`` and ``http_check_suite``
activities (activities/http_checks.py).

A probe is one request with an expected status and, optionally, a piece of text the body must contain. A suite is
a list of named checks tried up to ``attempts`` times, ``interval_seconds`` apart, until every check passes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BODY_EXCERPT_CHARS = 200


class HttpProbeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="absolute http(s) URL")
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"] = "GET"
    expect_status: int = Field(200, ge=100, le=599)
    expect_body: str | None = Field(None, description="text the response body must contain")
    timeout_seconds: float = Field(5, gt=0, le=300)
    headers: dict[str, str] = Field(default_factory=dict, description="no secrets: these land in workflow history")


class HttpProbeResult(BaseModel):
    url: str
    ok: bool
    status: int | None = None
    latency_ms: float = 0.0
    error: str | None = Field(None, description="why the probe failed, in words a person can act on")
    body_excerpt: str = ""


class HttpCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"] = "GET"
    expect_status: int = Field(200, ge=100, le=599)
    expect_body: str | None = None
    timeout_seconds: float = Field(5, gt=0, le=300)

    def probe(self) -> HttpProbeInput:
        return HttpProbeInput(
            url=self.url,
            method=self.method,
            expect_status=self.expect_status,
            expect_body=self.expect_body,
            timeout_seconds=self.timeout_seconds,
        )


class HttpCheckResult(BaseModel):
    name: str
    passed: bool
    attempts: int = Field(description="attempts made for this check")
    last: HttpProbeResult


class HttpSuiteInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checks: list[HttpCheck] = Field(default_factory=list)
    attempts: int = Field(3, ge=1, le=100, description="tries per check before it counts as failed")
    interval_seconds: float = Field(2, ge=0, le=600, description="pause between attempts")


class HttpSuiteResult(BaseModel):
    passed: bool
    results: list[HttpCheckResult] = Field(default_factory=list)

    @property
    def failed(self) -> list[HttpCheckResult]:
        return [r for r in self.results if not r.passed]

    def summary(self) -> str:
        if not self.results:
            return "no checks"
        parts = []
        for r in self.results:
            if r.passed:
                parts.append(f"{r.name}: ok ({r.last.status}, {r.last.latency_ms:.0f} ms)")
            else:
                parts.append(f"{r.name}: FAILED after {r.attempts} attempt(s): {r.last.error}")
        return "; ".join(parts)

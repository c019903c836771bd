"""A fake of CloudWatch's GetMetricData speaking the wire format boto3 uses (AWS JSON 1.0: ``POST /`` with
``X-Amz-Target: GraniteServiceVersion20100801.GetMetricData``), for what moto cannot answer: extended statistics
(``p95``, ``p99``, ``tm90``...) and metric math expressions.

``put(namespace, metric, dimensions, at, values)`` records raw values in a period (the requests and latencies a
target group saw in that minute); GetMetricData aggregates them per query period with the query's statistic:
``Sum``, ``Average``, ``Minimum``, ``Maximum``, ``SampleCount``, ``pNN`` (nearest-rank percentile) and ``tmNN``
(trimmed mean of the lowest NN %). A ``MetricDataQueries`` entry with ``Expression`` is metric math over the ids
of the others: ``+ - * /``, parentheses and numbers, evaluated per timestamp where every operand has a value
(a division by zero drops that point, as CloudWatch does). Answers keep CloudWatch's shapes: ``MetricDataResults``
of ``Id``/``Label``/``Timestamps`` (epoch seconds)/``Values``/``StatusCode``, only for ``ReturnData`` queries,
in ``ScanBy`` order. Errors are ``400 {"__type": "...#InvalidParameterValueException", "message": ...}`` with the
``x-amzn-query-error`` header boto3 reads (unknown statistic, bad expression, unknown id, missing field).
Every request body is kept in ``requests``; ``unavailable`` answers 503 ServiceUnavailable.
"""

from __future__ import annotations

import ast
import contextlib
import math
import re
from collections import defaultdict
from datetime import datetime
from typing import Any, Iterator

from tests.fakes._server import FakeServer, Request, Response

TARGET = "GraniteServiceVersion20100801.GetMetricData"
_EXTENDED = re.compile(r"^(p|tm)(\d{1,2}(?:\.\d+)?)$")
Key = tuple[str, str, tuple[tuple[str, str], ...]]


class BadRequest(Exception):
    pass


class CloudWatchFake:
    def __init__(self) -> None:
        self.data: dict[Key, list[tuple[float, float]]] = defaultdict(list)  # (epoch, value)
        self.requests: list[dict[str, Any]] = []
        self.unavailable = False
        self.server = FakeServer(self.handle)
        self.url = self.server.url

    def put(self, namespace: str, metric: str, dimensions: dict[str, str], at: datetime, values: list[float]) -> None:
        key = (namespace, metric, tuple(sorted(dimensions.items())))
        self.data[key] += [(at.timestamp(), float(v)) for v in values]

    # ------------------------------------------------------------------------------------------------ protocol
    def handle(self, req: Request) -> Response:
        if req.method != "POST" or req.headers.get("x-amz-target") != TARGET:
            return _error(400, "UnknownOperationException", f"this fake answers {TARGET} only")
        if "amz-json-1.0" not in req.headers.get("content-type", ""):
            return _error(400, "SerializationException", "expected application/x-amz-json-1.0")
        body = req.json if req.json is not None else {}
        self.requests.append(body)
        if self.unavailable:
            return _error(503, "ServiceUnavailable", "Service is unavailable", fault="Receiver")
        try:
            return Response(200, self._get_metric_data(body), {"Content-Type": "application/x-amz-json-1.0"})
        except BadRequest as err:
            return _error(400, "InvalidParameterValueException", str(err))

    def _get_metric_data(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            queries, start, end = body["MetricDataQueries"], float(body["StartTime"]), float(body["EndTime"])
        except (KeyError, TypeError, ValueError) as err:
            raise BadRequest(f"missing or malformed parameter: {err}") from None
        if end <= start:
            raise BadRequest("The parameter EndTime must be greater than StartTime.")
        series: dict[str, dict[float, float]] = {}
        for q in queries:
            if "MetricStat" in q:
                series[q["Id"]] = self._stat(q["MetricStat"], start, end)
        for q in queries:
            if "Expression" in q:
                series[q["Id"]] = _math(q["Expression"], series)
            elif "MetricStat" not in q:
                raise BadRequest(f"query {q.get('Id')!r}: exactly one of MetricStat and Expression must be given")
        descending = body.get("ScanBy", "TimestampDescending") == "TimestampDescending"
        results = []
        for q in queries:
            if not q.get("ReturnData", True):
                continue
            points = sorted(series[q["Id"]].items(), reverse=descending)
            results.append({
                "Id": q["Id"],
                "Label": q.get("Label") or q["Id"],
                "Timestamps": [t for t, _ in points],
                "Values": [v for _, v in points],
                "StatusCode": "Complete",
            })
        return {"MetricDataResults": results, "Messages": []}

    def _stat(self, stat: dict[str, Any], start: float, end: float) -> dict[float, float]:
        metric, period, name = stat["Metric"], int(stat["Period"]), stat["Stat"]
        if period <= 0 or period % 60 and period not in (1, 5, 10, 30):
            raise BadRequest(f"The parameter Period must be a multiple of 60 (got {period}).")
        aggregate = _statistic(name)
        key = (metric["Namespace"], metric["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))))
        buckets: dict[float, list[float]] = defaultdict(list)
        for at, value in self.data.get(key, []):
            if start <= at < end:
                buckets[at - (at - start) % period].append(value)
        return {t: aggregate(sorted(vs)) for t, vs in buckets.items()}


def _statistic(name: str) -> Any:
    basic = {
        "Sum": sum,
        "Average": lambda vs: sum(vs) / len(vs),
        "Minimum": min,
        "Maximum": max,
        "SampleCount": lambda vs: float(len(vs)),
    }
    if name in basic:
        return basic[name]
    match = _EXTENDED.match(name)
    if not match or not 0 < float(match.group(2)) < 100:
        raise BadRequest(f"The value {name} for parameter MetricDataQueries.member.1.MetricStat.Stat is not valid.")
    kind, pct = match.group(1), float(match.group(2))
    if kind == "p":
        return lambda vs: vs[max(0, math.ceil(pct / 100 * len(vs)) - 1)]
    return lambda vs: (lambda kept: sum(kept) / len(kept))(vs[: max(1, math.ceil(pct / 100 * len(vs)))])


def _math(expression: str, series: dict[str, dict[float, float]]) -> dict[float, float]:
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise BadRequest(f"Invalid metric math expression: {expression!r}") from None
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    unknown = sorted(names - series.keys())
    if unknown:
        raise BadRequest(f"Invalid metrics math expression, unknown id(s): {', '.join(unknown)}")
    stamps = set.intersection(*(set(series[n]) for n in names)) if names else set()
    out: dict[float, float] = {}
    for t in stamps:
        try:
            out[t] = _eval(tree, {n: series[n][t] for n in names})
        except ZeroDivisionError:
            continue
    return out


def _eval(node: ast.AST, env: dict[str, float]) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, env)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        a, b = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        return a * b if isinstance(node.op, ast.Mult) else a / b
    raise BadRequest(f"Unsupported metric math: {ast.dump(node)[:60]}")


def _error(status: int, code: str, message: str, fault: str = "Sender") -> Response:
    return Response(
        status,
        {"__type": f"com.amazonaws.cloudwatch#{code}", "message": message},
        {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-error": f"{code.removesuffix('Exception')};{fault}"},
    )


@contextlib.contextmanager
def cloudwatch_fake() -> Iterator[CloudWatchFake]:
    fake = CloudWatchFake()
    with fake.server:
        yield fake

"""A fake of the Prometheus HTTP API's instant query endpoint, answering with the real response shapes.

``GET|POST /api/v1/query?query=...`` answers
- ``{"status":"success","data":{"resultType":"vector","result":[{"metric":{...},"value":[<ts>,"<value>"]}]}}``
  for a query containing a key given to ``set_vector`` (one entry per series; ``"NaN"`` is allowed, as Prometheus
  writes it), or an empty vector for any other query;
- ``{"status":"success","data":{"resultType":"scalar","result":[<ts>,"<value>"]}}`` for ``set_scalar`` keys;
- ``400 {"status":"error","errorType":"bad_data","error":"..."}`` when the query does not parse (unbalanced braces
  or parentheses, as Prometheus's parser would refuse);
- ``503 {"status":"error","errorType":"unavailable",...}`` while ``unavailable`` is True.
``GET|POST /api/v1/query_range?query=&start=&end=&step=`` answers ``{"resultType":"matrix","result":[{"metric":{...},
"values":[[<ts>,"<v>"],...]}]}`` for a query containing a key given to ``set_matrix`` (its values spread one
``step`` apart, ending at ``end``), an empty matrix otherwise; ``400 bad_data`` without start/end/step.
Every query received is kept in ``queries`` (range queries with their parameters in ``ranges``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from tests.fakes._server import FakeServer, Request, Response


class PrometheusFake:
    def __init__(self) -> None:
        self.vectors: dict[str, list[tuple[dict[str, str], str]]] = {}
        self.scalars: dict[str, str] = {}
        self.matrices: dict[str, list[float | str]] = {}
        self.queries: list[str] = []
        self.ranges: list[dict[str, str]] = []
        self.unavailable = False
        self.server = FakeServer(self.handle)
        self.url = self.server.url

    def set_vector(self, key: str, *series: tuple[dict[str, str], float | str]) -> None:
        self.vectors[key] = [(labels, str(value)) for labels, value in series]

    def set_scalar(self, key: str, value: float | str) -> None:
        self.scalars[key] = str(value)

    def set_matrix(self, key: str, values: list[float | str]) -> None:
        self.matrices[key] = list(values)

    def handle(self, req: Request) -> Response:
        if req.path == "/api/v1/query_range":
            return self._range(req)
        if req.path != "/api/v1/query":
            return Response(404, b"404 page not found\n")
        query = (req.query.get("query") or [req.form.get("query", "")])[-1]
        self.queries.append(query)
        if self.unavailable:
            return Response(503, {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"})
        if not query or query.count("{") != query.count("}") or query.count("(") != query.count(")"):
            return Response(
                400, {"status": "error", "errorType": "bad_data", "error": f'1:{len(query)}: parse error: unclosed left brace'}
            )
        now = round(time.time(), 3)
        for key, value in self.scalars.items():
            if key in query:
                return Response(200, {"status": "success", "data": {"resultType": "scalar", "result": [now, value]}})
        series = next((s for key, s in self.vectors.items() if key in query), [])
        result = [{"metric": labels, "value": [now, value]} for labels, value in series]
        return Response(200, {"status": "success", "data": {"resultType": "vector", "result": result}})


    def _range(self, req: Request) -> Response:
        params = {k: (req.query.get(k) or [req.form.get(k, "")])[-1] for k in ("query", "start", "end", "step")}
        self.queries.append(params["query"])
        self.ranges.append(params)
        if self.unavailable:
            return Response(503, {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"})
        try:
            end, step = float(params["end"]), float(params["step"])
            float(params["start"])
        except ValueError:
            return Response(400, {"status": "error", "errorType": "bad_data", "error": "invalid parameter: start, end and step are required"})
        values = next((v for key, v in self.matrices.items() if key in params["query"]), None)
        if values is None:
            return Response(200, {"status": "success", "data": {"resultType": "matrix", "result": []}})
        points = [[end - step * (len(values) - 1 - i), str(v)] for i, v in enumerate(values)]
        return Response(200, {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": points}]}})


@contextlib.contextmanager
def prometheus_fake() -> Iterator[PrometheusFake]:
    fake = PrometheusFake()
    with fake.server:
        yield fake

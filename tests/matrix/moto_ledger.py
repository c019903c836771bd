"""moto in server mode with a change ledger in front of it, one AWS account per matrix case.

Run as ``python -m tests.matrix.moto_ledger PORT``. The WSGI middleware:

- maps an access key ``MX<12 digits>...`` to the moto account of those digits (``x-moto-account-id``), so every
  matrix case has its own, isolated AWS (moto keeps one backend per account);
- for a watched account, serialises its mutating requests (ELBv2, Route53, RDS, S3 writes) and after each one
  takes a snapshot of that service's resources in the account through the public API (boto3 requests, answered by
  this very server's WSGI application in the same process, not over a socket) and appends every resource whose
  state changed to the account's ledger: the ordered list of EFFECTIVE changes. A retried write that changes
  nothing leaves no entry; a write applied twice (a second replica, a second record) does.

Endpoints: ``POST /_ledger/<account>/watch`` {"services": [...], "regions": [...]} (takes the initial snapshot
and empties the ledger), ``GET /_ledger/<account>`` {"entries", "snapshot"} (the snapshot is taken fresh).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import sys
import threading
import time
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore import UNSIGNED
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.config import Config

from tests.moto_lookups import cache_moto_lookups

_CRED = re.compile(r"Credential=([A-Za-z0-9]+)/\d+/([a-z0-9-]+)/([a-z0-9-]+)/")
READ_PREFIXES = ("Describe", "List", "Get")
SERVICE_OF_SCOPE = {"elasticloadbalancing": "elbv2"}  # SigV4 signing name -> the snapshot's service name
_SESSION = boto3.Session()  # one session: service models load once for every account
_SESSION_LOCK = threading.Lock()


def account_of(access_key: str) -> str | None:
    if access_key.startswith("MX") and len(access_key) >= 14 and access_key[2:14].isdigit():
        return access_key[2:14]
    return None


def access_key_for(account: str) -> str:
    return f"MX{account}LEDGER"


class InProcess:
    """Boto3 clients whose requests a WSGI application (the ledger's) answers in process, as the HTTP server would,
    without the socket, the server's thread per connection and urllib3 (most of a snapshot's cost). One client per
    service and region serves every account: a request is not signed (SigV4's hashing is wasted on a server that
    checks no signature) but carries the Authorization header a signed one would, with the account's access key,
    the region and the signing name, which is all moto and the ledger read of it (account, region, service)."""

    def __init__(self, app: Callable, endpoint: str) -> None:
        self.app, self.endpoint = app, endpoint
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # the access key of the account a thread is reading

    @contextlib.contextmanager
    def reading(self, access_key: str) -> Iterator[None]:
        self._local.access_key = access_key
        try:
            yield
        finally:
            self._local.access_key = None

    def client(self, service: str, region: str) -> Any:
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                with _SESSION_LOCK:
                    client = _SESSION.client(service, region_name=region, endpoint_url=self.endpoint,
                                             config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
                scope = f"{region}/{client.meta.service_model.signing_name}/aws4_request"
                client.meta.events.register("before-send", functools.partial(self._send, scope))
                self._clients[service, region] = client
            return client

    def _send(self, scope: str, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        from moto.core.botocore_stubber import MockRawResponse
        from werkzeug.test import EnvironBuilder

        access_key = getattr(self._local, "access_key", None)
        assert access_key, "an in-process request outside InProcess.reading"
        url = urlsplit(request.url)
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else body.read()
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/20260101/{scope}, "
                                    "SignedHeaders=host, Signature=0")
        environ = EnvironBuilder(path=url.path or "/", base_url=f"{url.scheme}://{url.netloc}", query_string=url.query,
                                 method=request.method, data=body, headers=headers).get_environ()
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
            answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)
            return lambda data: None

        data = b"".join(self.app(environ, start_response))
        return AWSResponse(request.url, answer["status"], answer["headers"], MockRawResponse(data))


class Snapshotter:
    """The resources of one account, read through the public API, as {key: normalised state}."""

    def __init__(self, endpoint: str, account: str, services: list[str], regions: list[str],
                 in_process: InProcess | None = None) -> None:
        self.services, self.regions = services, regions
        self.access_key = access_key_for(account)
        self.endpoint = endpoint
        self.in_process = in_process  # when given, its application answers the requests in process
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str) -> Any:
        if self.in_process is not None:
            return self.in_process.client(service, region)
        key = (service, region)
        if key not in self._clients:
            with _SESSION_LOCK:
                self._clients[key] = _SESSION.client(
                    service, region_name=region, endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                    aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))
        return self._clients[key]

    def take(self, services: list[str] | None = None) -> dict[str, Any]:
        snap: dict[str, Any] = {}
        with self.in_process.reading(self.access_key) if self.in_process else contextlib.nullcontext():
            for service in services if services is not None else self.services:
                getattr(self, f"_{service}")(snap)
        return snap

    def _elbv2(self, snap: dict) -> None:
        for region in self.regions:
            elb = self.client("elbv2", region)
            names = {}
            for tg in elb.describe_target_groups().get("TargetGroups", []):
                names[tg["TargetGroupArn"]] = tg["TargetGroupName"]
                health = elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
                snap[f"elbv2:{region}:targets:{tg['TargetGroupName']}"] = sorted(
                    f"{d['Target']['Id']}:{d['Target'].get('Port')}" for d in health
                    if d.get("TargetHealth", {}).get("State") != "draining"
                )

            def action(a: dict, names: dict = names) -> Any:
                groups = (a.get("ForwardConfig") or {}).get("TargetGroups")
                if groups:
                    return {names.get(g["TargetGroupArn"], g["TargetGroupArn"]): g.get("Weight", 1) for g in groups}
                if a.get("TargetGroupArn"):
                    return {names.get(a["TargetGroupArn"], a["TargetGroupArn"]): 1}
                return a.get("Type")

            for lb in elb.describe_load_balancers().get("LoadBalancers", []):
                for listener in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"]).get("Listeners", []):
                    base = f"elbv2:{region}:listener:{lb['LoadBalancerName']}:{listener['Port']}"
                    snap[base] = [action(a) for a in listener.get("DefaultActions", [])]
                    for rule in elb.describe_rules(ListenerArn=listener["ListenerArn"]).get("Rules", []):
                        if not rule.get("IsDefault"):
                            snap[f"{base}:rule:{rule['Priority']}"] = [action(a) for a in rule.get("Actions", [])]

    def _route53(self, snap: dict) -> None:
        r53 = self.client("route53", "us-east-1")
        for zone in r53.list_hosted_zones().get("HostedZones", []):
            zone_id = zone["Id"].split("/")[-1]
            for rs in r53.list_resource_record_sets(HostedZoneId=zone_id).get("ResourceRecordSets", []):
                if rs["Type"] in ("SOA", "NS"):
                    continue
                key = f"route53:{zone['Name']}:{rs['Name']}:{rs['Type']}:{rs.get('SetIdentifier', '')}"
                snap[key] = {
                    "values": [r["Value"] for r in rs.get("ResourceRecords", [])],
                    "failover": rs.get("Failover"), "weight": rs.get("Weight"),
                    "alias": (rs.get("AliasTarget") or {}).get("DNSName"),
                }

    def _rds(self, snap: dict) -> None:
        for region in self.regions:
            rds = self.client("rds", region)
            for db in rds.describe_db_instances().get("DBInstances", []):
                tags = {t["Key"]: t["Value"] for t in db.get("TagList", []) if t["Key"].startswith("runbook:")}
                source = db.get("ReadReplicaSourceDBInstanceIdentifier")
                snap[f"rds:{region}:{db['DBInstanceIdentifier']}"] = {
                    "replica_of": source.split(":")[-1] if source else None,
                    "parameter_groups": sorted(g["DBParameterGroupName"] for g in db.get("DBParameterGroups", [])),
                    "tags": tags,
                }

    def _s3(self, snap: dict) -> None:
        s3 = self.client("s3", "us-east-1")
        for bucket in s3.list_buckets().get("Buckets", []):
            for obj in s3.list_objects_v2(Bucket=bucket["Name"]).get("Contents", []):
                snap[f"s3:{bucket['Name']}/{obj['Key']}"] = "present"  # contents carry times and ids


class _Account:
    def __init__(self, snapshotter: Snapshotter) -> None:
        self.snapshotter = snapshotter
        self.lock = threading.Lock()
        self.entries: list[dict] = []
        self.last = snapshotter.take()


class LedgerMiddleware:
    def __init__(self, app: Any, endpoint: str) -> None:
        self.app, self.endpoint = app, endpoint
        self.in_process = InProcess(self, endpoint)  # the snapshots' requests, answered by this middleware
        self.accounts: dict[str, _Account] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_ledger/"):
            return self._api(environ, start_response, path)
        match = _CRED.search(environ.get("HTTP_AUTHORIZATION", ""))
        account = account_of(match.group(1)) if match else None
        if account is None:
            return self.app(environ, start_response)
        environ["HTTP_X_MOTO_ACCOUNT_ID"] = account
        service = SERVICE_OF_SCOPE.get(match.group(3), match.group(3))
        watched = self.accounts.get(account)
        if watched is None or service not in watched.snapshotter.services:
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD"):
            return self.app(environ, start_response)
        length = environ.get("CONTENT_LENGTH")
        if length:
            body = environ["wsgi.input"].read(int(length))
        elif environ.get("wsgi.input_terminated") or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", ""):
            body = environ["wsgi.input"].read()
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        op = self._mutation(environ, body, service)
        if op is None:
            return self.app(environ, start_response)
        with watched.lock:
            captured: dict = {}

            def capture(status: str, headers: list, exc_info: Any = None) -> Any:
                captured["status"], captured["headers"] = status, headers
                return lambda data: None

            chunks = list(self.app(environ, capture))
            if int(captured["status"].split()[0]) < 300:
                # a write changes only its own service's resources: the others are carried over from the last
                snap = {k: v for k, v in watched.last.items() if not k.startswith(f"{service}:")}
                snap.update(watched.snapshotter.take([service]))
                for key in sorted(set(snap) | set(watched.last)):
                    if snap.get(key) != watched.last.get(key):
                        watched.entries.append({"op": op, "key": key, "value": snap.get(key), "t": time.time()})
                watched.last = snap
        start_response(captured["status"], captured["headers"])
        return chunks

    @staticmethod
    def _mutation(environ: dict, body: bytes, service: str) -> str | None:
        method = environ.get("REQUEST_METHOD", "GET")
        if method in ("GET", "HEAD"):
            return None
        params = parse_qs(environ.get("QUERY_STRING", ""))
        if method == "POST" and "form-urlencoded" in environ.get("CONTENT_TYPE", ""):
            params.update(parse_qs(body.decode(errors="replace")))
        action = (params.get("Action") or [None])[0]
        if action:
            return None if action.startswith(READ_PREFIXES) else f"{service}:{action}"
        return f"{service}:{method} {environ.get('PATH_INFO', '')}"

    def _api(self, environ: dict, start_response: Any, path: str) -> Any:
        parts = path.strip("/").split("/")
        account = parts[1]
        if len(parts) == 3 and parts[2] == "watch":
            spec = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
            snapshotter = Snapshotter(self.endpoint, account, spec.get("services", []), spec.get("regions", ["us-east-1"]),
                                      in_process=self.in_process)
            with self._lock:
                self.accounts[account] = _Account(snapshotter)
            answer: Any = {"snapshot": self.accounts[account].last}
        else:
            watched = self.accounts.get(account)
            if watched is None:
                answer = {"entries": [], "snapshot": {}}
            else:
                with watched.lock:
                    answer = {"entries": list(watched.entries), "snapshot": watched.snapshotter.take()}
        data = json.dumps(answer).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]


def main(port: int) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    cache_moto_lookups()
    endpoint = f"http://127.0.0.1:{port}"
    app = LedgerMiddleware(DomainDispatcherApplication(create_backend_app), endpoint)
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))

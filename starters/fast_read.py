"""The `runbook` console script's entry: `runbook status ID --json` and `runbook list --json` answered without the
SDK's Python client.

Importing ``temporalio`` at all costs about 0.4 s on an idle 2-core machine (its package imports every service's
API protos), Typer and the product's pydantic models as much again, while each answer is one gRPC call: issue 14's
goal is 0.25 s. So this module answers those two commands with the SDK's own client core (its Rust bridge, the
extension module every SDK client connects through, loaded alone), the SDK's environment configuration (the
bridge's loader, the same ``TEMPORAL_*`` variables, profiles and config file, turned into the same connection:
tests check it against ``temporalio.service.ConnectConfig``), the product's codec keys (``workers.keyring``) and a
hand-written encoding of the few fields it sends and reads (``QueryWorkflow`` and ``ListWorkflowExecutions``; field
numbers from temporal/api, which protobuf's rules never let change). It prints what the full command prints (the
run's ``RunbookStatus``, ``RunbookClient.runs``' rows), with the same errors and exit codes.

Anything else (another command, an option this path does not know, ``--help``, a ``.env`` file, codec keys in
Vault, tracing on, TLS with certificates, an answer or attribute it does not recognise, a bridge it cannot load)
goes to the full command, ``starters.cli``, which is always right and only slower. tests/core/test_cli_imports.py
checks both give the same bytes and that this path loads no ``temporalio`` package, pydantic nor Typer.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE = 0, 1, 2  # as starters.cli's
NOT_FOUND, UNAVAILABLE = 5, 14  # gRPC status codes
DEFAULT_ADDRESS, DEFAULT_NAMESPACE = "localhost:7233", "default"  # as workers.connection's
# The SDK's defaults for a client (temporalio.service.ConnectConfig, temporalio.runtime.LoggingConfig.default)
LOG_FILTER = ("ERROR,temporalio_common=WARN,temporalio_sdk_core=WARN,temporalio_client=WARN,temporalio_sdk=WARN,"
              "temporal_sdk_bridge=WARN")
KEEP_ALIVE = {"interval_millis": 30000, "timeout_millis": 15000}
PAYLOADS_WARN_SIZE, MEMO_WARN_SIZE = 512 * 1024, 2 * 1024


class Fallback(Exception):
    """This path cannot answer as the full command would: the full command answers."""


class Failed(Exception):
    """The command's answer is an error: ``error: <message>`` on stderr and ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Request:
    command: str  # "status" or "list"
    workflow_id: str = ""
    address: str | None = None
    namespace: str | None = None
    runbook: str | None = None
    target: str | None = None
    status: str | None = None
    limit: int = 50


OPTIONS = {"status": ("--address", "--namespace"),
           "list": ("--address", "--namespace", "--runbook", "--target", "--status", "--limit")}


def parse(argv: list[str]) -> Request | None:
    """``status ID --json`` or ``list --json`` with their options (``--opt=value`` too), else None."""
    if not argv or argv[0] not in OPTIONS:
        return None
    command, rest = argv[0], argv[1:]
    positional: list[str] = []
    options: dict[str, str] = {}
    as_json = False
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if arg == "--json":
            as_json = True
        elif name in OPTIONS[command]:
            if not eq:
                if not rest:
                    return None
                value = rest.pop(0)
            options[name[2:]] = value
        elif arg.startswith("-"):
            return None  # --help, -h, an unknown option: Typer's to answer
        else:
            positional.append(arg)
    limit = options.pop("limit", "50")
    if not as_json or len(positional) != (1 if command == "status" else 0) or not limit.isdigit() or int(limit) < 1:
        return None
    return Request(command, positional[0] if positional else "", options.get("address"), options.get("namespace"),
                   options.get("runbook"), options.get("target"), options.get("status"), int(limit))


def visibility_query(*, runbook: str | None = None, target: str | None = None, status: str | None = None) -> str:
    """The visibility query of ``runbook list``: runbook runs, narrowed by the Runbook* search attributes."""
    clauses = ["RunbookName IS NOT NULL"]
    for attr, value in (("RunbookName", runbook), ("RunbookTarget", target), ("RunbookStatus", status)):
        if value:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            clauses.append(f'{attr} = "{escaped}"')
    return " AND ".join(clauses)


# ----------------------------------------------------------------------------- settings
def _setting(env: Mapping[str, str], *names: str) -> str | None:
    """A setting as core.config.Settings reads it from the environment (names are not case-sensitive)."""
    wanted = {name.lower() for name in names}
    for key, value in env.items():
        if key.lower() in wanted:
            return value
    return None


def _keyring(env: Mapping[str, str]) -> Any:
    """The codec's keyring (workers.keyring.KeyRing) or None, as the full command loads it; ``Fallback`` for the
    settings this path does not read (a .env file, keys in Vault, tracing)."""
    if Path(".env").exists():
        raise Fallback("settings from a .env file")
    from workers.telemetry import tracing_enabled

    if tracing_enabled(env):
        raise Fallback("tracing")
    keys_file = _setting(env, "RUNBOOK_CODEC_KEYS_FILE")
    if keys_file:
        from workers.keyring import KeyRing

        return KeyRing.from_file(Path(keys_file))
    if _setting(env, "RUNBOOK_CODEC_VAULT_PATH"):
        raise Fallback("codec keys in Vault")
    return None


# ----------------------------------------------------------------------------- the bridge
def _bridge() -> tuple[Any, str]:
    """The SDK's client core alone, without the ``temporalio`` package (whose import is what this path avoids), and
    the SDK's version (the client's version header), from the package's installed metadata folder's name."""
    import importlib.util
    from importlib.machinery import EXTENSION_SUFFIXES

    package = importlib.util.find_spec("temporalio")
    if package is None or not package.submodule_search_locations:
        raise Fallback("no temporalio package")
    folder = Path(next(iter(package.submodule_search_locations)))
    found = [folder / "bridge" / f"temporal_sdk_bridge{suffix}" for suffix in EXTENSION_SUFFIXES]
    versions = [d.name[len("temporalio-"):-len(".dist-info")] for d in folder.parent.glob("temporalio-*.dist-info")]
    so = next((path for path in found if path.exists()), None)
    if so is None or len(versions) != 1:
        raise Fallback(f"SDK bridge not found by {folder}")
    spec = importlib.util.spec_from_file_location("temporal_sdk_bridge", so)
    if spec is None or spec.loader is None:
        raise Fallback(f"SDK bridge {so} not loadable")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        raise Fallback(f"SDK bridge: {error}") from None
    return module, versions[0]


@dataclass
class _Obj:
    """A plain object with attributes: what the bridge reads its configurations from."""

    values: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def client_config(raw: Mapping[str, Any], sdk_version: str) -> tuple[str, str, _Obj]:
    """Address, namespace and the bridge's client configuration from the profile the bridge's environment-config
    loader read (``raw``), as ``temporalio.envconfig.ClientConfigProfile`` and ``temporalio.service.ConnectConfig``
    make them (with workers.connection's defaults)."""
    address = raw.get("address") or DEFAULT_ADDRESS
    namespace = raw.get("namespace")
    namespace = DEFAULT_NAMESPACE if namespace is None else namespace
    api_key = raw.get("api_key")
    tls = raw.get("tls") or {}
    if set(tls) - {"disabled", "server_name", "disable_host_verification"} or "://" in address:  # the SDK
        # ignores disable_host_verification; certificates (files or data) are more than this path reads
        raise Fallback("TLS certificates")
    use_tls = (api_key is not None and not tls) or (bool(tls) and tls.get("disabled") is not True)
    tls_config = None
    if use_tls:
        tls_config = _Obj(dict(server_root_ca_cert=None, domain=tls.get("server_name"), client_cert=None,
                               client_private_key=None, verification_server_name=None))
    config = _Obj(dict(
        target_url=f"{'https' if use_tls else 'http'}://{address}", metadata=dict(raw.get("grpc_meta") or {}),
        api_key=api_key, identity=f"{os.getpid()}@{socket.gethostname()}", tls_config=tls_config, retry_config=None,
        keep_alive_config=_Obj(dict(KEEP_ALIVE)), client_name="temporal-python", client_version=sdk_version,
        http_connect_proxy_config=None, dns_load_balancing_config=None, grpc_compression="gzip",
        payloads_warn_size=PAYLOADS_WARN_SIZE, memo_warn_size=MEMO_WARN_SIZE, connect_timeout_millis=None))
    return address, namespace, config


# ----------------------------------------------------------------------------- protobuf, the few fields we use
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bytes_field(number: int, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A message's fields in order: (number, int) for varints, (number, bytes) for length-delimited ones."""
    out: list[tuple[int, int | bytes]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = buf[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while i < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out.append((number, varint()))
        elif wire == 2:
            size = varint()
            out.append((number, buf[i:i + size]))
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise Fallback(f"protobuf wire type {wire}")
    return out


def _one(buf: bytes, number: int) -> bytes:
    values = [v for n, v in _fields(buf) if n == number and isinstance(v, bytes)]
    return values[-1] if values else b""


def _int(buf: bytes, number: int) -> int:
    values = [v for n, v in _fields(buf) if n == number and isinstance(v, int)]
    return values[-1] if values else 0


def query_request(namespace: str, workflow_id: str, query_type: str) -> bytes:
    """QueryWorkflowRequest{namespace=1, execution=2 WorkflowExecution{workflow_id=1}, query=3 WorkflowQuery{
    query_type=1}} (no arguments, no reject condition: as the SDK's handle.query sends it)."""
    return (_bytes_field(1, namespace) + _bytes_field(2, _bytes_field(1, workflow_id))
            + _bytes_field(3, _bytes_field(1, query_type)))


def payload_parts(payload: bytes) -> tuple[dict[str, bytes], bytes]:
    """Payload{metadata=1 map<string, bytes>, data=2}."""
    metadata: dict[str, bytes] = {}
    for number, value in _fields(payload):
        if number == 1 and isinstance(value, bytes):
            metadata[_one(value, 1).decode()] = _one(value, 2)
    return metadata, _one(payload, 2)


def query_answer(response: bytes, keyring: Any) -> Any:
    """The JSON value of QueryWorkflowResponse{query_result=1 Payloads{payloads=1}} (its one payload, decrypted
    as workers.codec does)."""
    fields = _fields(response)
    if any(number == 2 for number, _ in fields):
        raise Fallback("query rejected")
    payloads = [v for n, v in _fields(_one(response, 1)) if n == 1 and isinstance(v, bytes)]
    if len(payloads) != 1:
        raise Fallback(f"{len(payloads)} payloads")
    metadata, data = payload_parts(payloads[0])
    if keyring is not None:
        from workers.keyring import ENCODING, KEY_ID

        if metadata.get("encoding") == ENCODING:
            metadata, data = payload_parts(keyring.open(metadata.get(KEY_ID, b"").decode(errors="replace"), data))
    if metadata.get("encoding") != b"json/plain":
        raise Fallback(f"payload encoding {metadata.get('encoding')!r}")
    return json.loads(data)


EXECUTION_STATUS = {1: "RUNNING", 2: "COMPLETED", 3: "FAILED", 4: "CANCELED", 5: "TERMINATED", 6: "CONTINUED_AS_NEW",
                    7: "TIMED_OUT"}  # temporal.api.enums.v1.WorkflowExecutionStatus, as the SDK's enum names them
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
PAGE_SIZE = 1000  # the SDK's list_workflows default


def list_request(namespace: str, query: str, page_size: int, token: bytes) -> bytes:
    """ListWorkflowExecutionsRequest{namespace=1, page_size=2, next_page_token=3, query=4}."""
    return (_bytes_field(1, namespace) + _int_field(2, page_size) + (_bytes_field(3, token) if token else b"")
            + _bytes_field(4, query))


def _search_attribute(payload: bytes) -> str:
    """One search attribute as RunbookClient.runs shows it: the first of its values, as text ("" for none)."""
    metadata, data = payload_parts(payload)
    if metadata.get("encoding") != b"json/plain" or metadata.get("type") == b"Datetime":
        raise Fallback(f"search attribute encoding {metadata.get('encoding')!r}, type {metadata.get('type')!r}")
    values = json.loads(data)
    values = values if isinstance(values, list) else [values]
    return str(values[0]) if values else ""


def run_row(info: bytes) -> dict[str, Any]:
    """A WorkflowExecutionInfo{execution=1 {workflow_id=1, run_id=2}, start_time=3 {seconds=1, nanos=2}, status=5,
    search_attributes=11 {indexed_fields=1 map<string, Payload>}} as RunbookClient.runs makes its row."""
    execution, start = _one(info, 1), _one(info, 3)
    attrs = {_one(entry, 1).decode(): _one(entry, 2)
             for number, entry in _fields(_one(info, 11)) if number == 1 and isinstance(entry, bytes)}

    def attr(name: str) -> str:
        return _search_attribute(attrs[name]) if name in attrs else ""

    started = EPOCH + timedelta(seconds=_int(start, 1), microseconds=_int(start, 2) // 1000)
    return {
        "workflow_id": _one(execution, 1).decode(),
        "run_id": _one(execution, 2).decode(),
        "runbook": attr("RunbookName"),
        "target": attr("RunbookTarget"),
        "environment": attr("RunbookEnvironment"),
        "requested_by": attr("RunbookRequestedBy"),
        "status": attr("RunbookStatus"),
        "execution": EXECUTION_STATUS.get(_int(info, 5)),
        "started": started.isoformat(),
    }


# ----------------------------------------------------------------------------- the commands
class _Connection:
    """The bridge's client, connected as the full command connects (workers.connection.connect)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.keyring = _keyring(env)
        self.bridge, sdk_version = _bridge()
        profile = _setting(env, "TEMPORAL_PROFILE", "RUNBOOK_TEMPORAL_PROFILE")
        try:
            raw = self.bridge.envconfig.load_client_connect_config(
                profile=profile, path=None, data=None, disable_file=False, disable_env=False,
                config_file_strict=False, env_vars=None)
            self.address, self.namespace, self.config = client_config(raw, sdk_version)
        except Fallback:
            raise
        except Exception as error:  # a profile or config file the SDK refuses: the full command says how
            raise Fallback(f"environment configuration: {error}") from None
        self.client: Any = None

    async def call(self, rpc: str, request: bytes) -> bytes:
        """One WorkflowService call; a gRPC error as the full command reports it (starters.cli._run)."""
        if self.client is None:
            runtime = self.bridge.init_runtime(_Obj(dict(
                telemetry=_Obj(dict(logging=_Obj(dict(filter=LOG_FILTER, forward_to=None, format=None)), metrics=None)),
                worker_heartbeat_interval_millis=None, disable_environment_info=False)))
            try:
                self.client = await self.bridge.connect_client(runtime, self.config)
            except RuntimeError:
                raise Failed(f"cannot reach Temporal at {self.address} (set TEMPORAL_ADDRESS or --address)",
                             EXIT_UNREACHABLE) from None
        call = _Obj(dict(rpc=rpc, req=request, retry=True, metadata={}, timeout_millis=None))
        try:
            return bytes(await self.client.call_workflow_service(call))
        except self.bridge.RPCError as error:
            code, message, _details = error.args
            if code == NOT_FOUND:
                raise Failed(message, EXIT_USAGE) from None
            if code == UNAVAILABLE:
                raise Failed(f"Temporal unavailable: {message}", EXIT_UNREACHABLE) from None
            raise Failed(f"Temporal refused the request: {message}", EXIT_UNREACHABLE) from None


async def status(request: Request, env: Mapping[str, str] = os.environ) -> Any:
    """The run's status as the full command's ``status --json`` prints it."""
    connection = _Connection(env)
    try:
        response = await connection.call("query_workflow", query_request(connection.namespace, request.workflow_id,
                                                                         "status"))
    except Failed as error:
        if error.code == EXIT_USAGE:  # NOT_FOUND: RunbookClient's RunNotFound
            raise Failed(f"no runbook run with id {request.workflow_id!r}", EXIT_USAGE) from None
        raise
    return query_answer(response, connection.keyring)


async def runs(request: Request, env: Mapping[str, str] = os.environ) -> list[dict[str, Any]]:
    """The runs as the full command's ``list --json`` prints them (RunbookClient.runs, paged as the SDK's
    list_workflows pages)."""
    connection = _Connection(env)
    query = visibility_query(runbook=request.runbook, target=request.target, status=request.status)
    rows: list[dict[str, Any]] = []
    token = b""
    while len(rows) < request.limit:
        page = await connection.call("list_workflow_executions", list_request(
            connection.namespace, query, min(PAGE_SIZE, request.limit - len(rows)), token))
        infos = [info for number, info in _fields(page) if number == 1 and isinstance(info, bytes)]
        rows += [run_row(info) for info in infos[:request.limit - len(rows)]]
        token = _one(page, 2)
        if not token:
            break
    return rows


def answer(argv: list[str]) -> int | None:
    """The exit code of the command answered here, or None for the full command to answer it."""
    request = parse(argv)
    if request is None:
        return None
    if request.address:
        os.environ["TEMPORAL_ADDRESS"] = request.address
    if request.namespace:
        os.environ["TEMPORAL_NAMESPACE"] = request.namespace
    from workers.keyring import CodecKeyError

    try:
        found = asyncio.run(status(request) if request.command == "status" else runs(request))
    except Fallback:
        return None
    except CodecKeyError as error:
        sys.stderr.write(f"error: {error}\n")
        return EXIT_USAGE
    except Failed as error:
        sys.stderr.write(f"error: {error}\n")
        return error.code
    sys.stdout.write(json.dumps(found, indent=2, default=str) + "\n")
    return EXIT_OK


def main() -> None:
    """The console script (``runbook``): this path when it can answer, else the full command."""
    code = answer(sys.argv[1:])
    if code is None:
        from starters.cli import main as full

        full()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as starters.cli.main ends: the SDK's runtime threads may abort interpreter finalisation


if __name__ == "__main__":
    main()

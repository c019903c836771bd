"""AWS activities (boto3): ALB weights and targets, Route53 records, RDS instances/snapshots/replicas, S3 JSON.

Every class receives an :class:`AwsClients` (a boto3 Session plus a per-(service, region) client cache); boto3
reads credentials, region and ``AWS_ENDPOINT_URL`` from its own environment, so nothing here knows about moto.
Every activity is synchronous (run on the worker's thread pool), takes one pydantic input, returns one pydantic
result, is safe to retry, and turns botocore failures into ``ApplicationError`` types from :mod:`core.errors`:

- "not found" codes -> ``NOT_FOUND`` (non-retryable), access codes -> ``ACCESS_DENIED`` (non-retryable),
- validation codes -> ``INVALID_INPUT`` (non-retryable),
- throttling, 5xx, busy-resource and connection errors -> ``TRANSIENT`` (retryable).

Limits moto does not enforce (ALB weight 0..999, Route53 weight 0..255, failover/weight exclusivity) are checked
here before anything is written, and every write is read back and compared (``VERIFICATION_FAILED``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import boto3
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, ParamValidationError
from botocore.exceptions import ConnectionError as BotoConnectionError
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from core import errors
from core.aws import (
    ALB_MAX_WEIGHT,
    ROUTE53_MAX_WEIGHT,
    AlbLookup,
    AlbLookupInput,
    AlbSetWeightsInput,
    AlbSwitchInput,
    AlbSwitchResult,
    AlbTargetGroupRef,
    AlbTargetHealth,
    AlbTargetsInput,
    AlbTargetsResult,
    AlbTargetState,
    AlbTrafficRef,
    AlbWeights,
    AliasTarget,
    RdsCreateReplicaInput,
    RdsDeleteInput,
    RdsDeleteResult,
    RdsFenceInput,
    RdsFenceResult,
    RdsInstance,
    RdsInstanceRef,
    RdsParameterGroupInput,
    RdsReplicaLag,
    RdsRestoreInput,
    RdsSnapshot,
    RdsSnapshotQuery,
    RdsWaitInput,
    RecordSet,
    Route53QueryInput,
    Route53Records,
    Route53UpsertInput,
    S3BucketInfo,
    S3BucketRef,
    S3DeleteResult,
    S3JsonDocument,
    S3LatestQuery,
    S3ObjectInfo,
    S3ObjectKey,
    S3ObjectRef,
    S3PutJsonInput,
)

PROMOTED_TAG = "runbook:promoted"
RESTORED_FROM_TAG = "runbook:restored-from"


# ---------------------------------------------------------------------------------------------------- clients
class AwsClients:
    """A boto3 Session and its clients, cached per (service, region). Thread-safe (activities run in threads)."""

    def __init__(self, session: boto3.Session | None = None, config: Any = None) -> None:
        self.session = session or boto3.Session()
        self._config = config
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._lock = threading.Lock()

    @property
    def default_region(self) -> str:
        return self.session.region_name or "us-east-1"

    def client(self, service: str, region: str | None = None) -> Any:
        key = (service, region or self.default_region)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self.session.client(service, region_name=key[1], config=self._config)
            return self._clients[key]


# ------------------------------------------------------------------------------------------------- error mapping
_NOT_FOUND_CODES = {
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchHostedZone",
    "NoSuchHealthCheck",
    "NoSuchChange",
    "404",
    "NotFound",
}
_ACCESS_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "AuthFailure",
}
_TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "PriorRequestNotComplete",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
    "InvalidDBInstanceState",
    "InvalidDBInstanceStateFault",
    "InvalidDBClusterStateFault",
    "ResourceInUse",
    "ResourceInUseException",
    "OperationAborted",
    "Conflict",
}
_INVALID_CODES = {
    "ValidationError",
    "ValidationException",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidInput",
    "InvalidChangeBatch",
    "InvalidConfigurationRequest",
    "InvalidArgument",
    "MalformedXML",
    "InvalidBucketName",
    "InvalidTarget",
    "TooManyTargetGroups",
    "TargetGroupAssociationLimit",
}


def classify(err: ClientError) -> tuple[str, bool]:
    """(core.errors type, non_retryable) for a botocore ClientError."""
    code = err.response.get("Error", {}).get("Code", "") or ""
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if code in _ACCESS_CODES:
        return errors.ACCESS_DENIED, True
    if code in _NOT_FOUND_CODES or code.endswith("NotFound") or code.endswith("NotFoundFault") or code.endswith(
        "NotFoundException"
    ):
        return errors.NOT_FOUND, True
    if code in _TRANSIENT_CODES or status >= 500:
        return errors.TRANSIENT, False
    if code in _INVALID_CODES or code.startswith("Invalid") or code.endswith("AlreadyExists"):
        return errors.INVALID_INPUT, True
    # Unknown 4xx codes: retry (bounded by the caller's retry policy) rather than give up on a surprise.
    return errors.TRANSIENT, False


def _code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "") or ""


@contextlib.contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Turn botocore failures into typed ApplicationErrors whose message says what we were doing."""
    try:
        yield
    except ApplicationError:
        raise
    except ClientError as err:
        kind, non_retryable = classify(err)
        message = err.response.get("Error", {}).get("Message", "") or str(err)
        raise ApplicationError(
            f"{what}: {_code(err) or 'error'}: {message}", type=kind, non_retryable=non_retryable
        ) from err
    except (EndpointConnectionError, BotoConnectionError) as err:
        raise ApplicationError(f"{what}: cannot reach AWS: {err}", type=errors.TRANSIENT) from err
    except BotoCoreError as err:
        raise ApplicationError(f"{what}: {err}", type=errors.TRANSIENT) from err


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=errors.INVALID_INPUT, non_retryable=True)


def _heartbeat(*details: Any) -> None:
    """Heartbeat when running as an activity (a no-op when called directly, e.g. from the seeding script)."""
    with contextlib.suppress(RuntimeError):
        activity.heartbeat(*details)


# ---------------------------------------------------------------------------------------------------- ELBv2
class ElbActivities:
    """Weighted forwards on ALB listeners/rules and target registration."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    def _elb(self, region: str | None) -> Any:
        return self._clients.client("elbv2", region)

    def _actions(self, ref: AlbTrafficRef) -> list[dict]:
        elb = self._elb(ref.region)
        if ref.rule_arn:
            with aws_errors(f"reading ALB rule {ref.rule_arn}"):
                rules = elb.describe_rules(RuleArns=[ref.rule_arn])["Rules"]
            if not rules:
                raise ApplicationError(f"ALB rule {ref.rule_arn} not found", type=errors.NOT_FOUND, non_retryable=True)
            return rules[0].get("Actions", [])
        with aws_errors(f"reading ALB listener {ref.listener_arn}"):
            listeners = elb.describe_listeners(ListenerArns=[ref.listener_arn])["Listeners"]
        if not listeners:
            raise ApplicationError(
                f"ALB listener {ref.listener_arn} not found", type=errors.NOT_FOUND, non_retryable=True
            )
        return listeners[0].get("DefaultActions", [])

    @staticmethod
    def _forward_index(actions: list[dict], ref: AlbTrafficRef) -> int:
        for i, action in enumerate(actions):
            if action.get("Type") == "forward":
                return i
        where = ref.rule_arn or ref.listener_arn
        raise _invalid(f"{where} has no forward action: traffic weights cannot be read or set there")

    @staticmethod
    def _weights_of(action: dict) -> dict[str, int]:
        groups = (action.get("ForwardConfig") or {}).get("TargetGroups") or []
        if groups:
            return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
        if action.get("TargetGroupArn"):
            # A plain forward sends everything to one group: AWS's default weight is 1.
            return {action["TargetGroupArn"]: 1}
        return {}

    def _read(self, ref: AlbTrafficRef) -> tuple[list[dict], int, dict[str, int]]:
        actions = self._actions(ref)
        index = self._forward_index(actions, ref)
        return actions, index, self._weights_of(actions[index])

    @staticmethod
    def _same(a: dict[str, int], b: dict[str, int]) -> bool:
        """Equal as traffic splits: a group missing on one side counts as weight 0."""
        keys = set(a) | set(b)
        return all(a.get(k, 0) == b.get(k, 0) for k in keys)

    @staticmethod
    def _validate(weights: dict[str, int]) -> None:
        if not weights:
            raise _invalid("no target group weights given")
        for arn, weight in weights.items():
            if not isinstance(weight, int) or not 0 <= weight <= ALB_MAX_WEIGHT:
                raise _invalid(f"weight {weight!r} for {arn} is outside 0..{ALB_MAX_WEIGHT} (the ALB limit)")
        if not any(w > 0 for w in weights.values()):
            raise _invalid("at least one target group must have a weight above 0 (all-zero would drop traffic)")

    def _write(self, ref: AlbTrafficRef, actions: list[dict], index: int, desired: dict[str, int]) -> dict[str, int]:
        """Write ``desired`` into the forward action, keeping every other setting; read back and verify."""
        forward = dict(actions[index])
        config = dict(forward.get("ForwardConfig") or {})
        config["TargetGroups"] = [{"TargetGroupArn": arn, "Weight": w} for arn, w in desired.items()]
        forward["ForwardConfig"] = config
        forward.pop("TargetGroupArn", None)  # ForwardConfig is the single source of truth for a weighted forward
        new_actions = [*actions[:index], forward, *actions[index + 1 :]]
        elb = self._elb(ref.region)
        if ref.rule_arn:
            with aws_errors(f"setting weights on ALB rule {ref.rule_arn}"):
                elb.modify_rule(RuleArn=ref.rule_arn, Actions=new_actions)
        else:
            with aws_errors(f"setting weights on ALB listener {ref.listener_arn}"):
                elb.modify_listener(ListenerArn=ref.listener_arn, DefaultActions=new_actions)
        _, _, after = self._read(ref)
        if not self._same(after, desired):
            raise ApplicationError(
                f"ALB weights read back as {after} after writing {desired} on {ref.rule_arn or ref.listener_arn}",
                type=errors.VERIFICATION_FAILED,
                non_retryable=True,
            )
        return after

    @staticmethod
    def _desired(current: dict[str, int], weights: dict[str, int]) -> dict[str, int]:
        """Requested groups get their weight; groups already in the forward but not named keep their slot at 0
        (so a later rollback can put traffic back without re-creating the action)."""
        desired = {arn: 0 for arn in current}
        desired.update(weights)
        return desired

    @activity.defn(name="alb_get_weights")
    def alb_get_weights(self, ref: AlbTrafficRef) -> AlbWeights:
        _, _, weights = self._read(ref)
        return AlbWeights(weights=weights)

    @activity.defn(name="alb_set_weights")
    def alb_set_weights(self, input: AlbSetWeightsInput) -> AlbWeights:
        self._validate(input.weights)
        actions, index, current = self._read(input.ref)
        desired = self._desired(current, input.weights)
        if self._same(current, desired) and set(current) >= set(input.weights):
            return AlbWeights(weights=current)
        return AlbWeights(weights=self._write(input.ref, actions, index, desired))

    @activity.defn(name="alb_find_listener")
    def alb_find_listener(self, input: AlbLookupInput) -> AlbLookup:
        """Read-only: the listener ARN of ``load_balancer``:``port`` and the ARNs of the named target groups."""
        elb = self._elb(input.region)
        with aws_errors(f"looking up ALB {input.load_balancer}"):
            lbs = elb.describe_load_balancers(Names=[input.load_balancer])["LoadBalancers"]
            listeners = elb.describe_listeners(LoadBalancerArn=lbs[0]["LoadBalancerArn"])["Listeners"]
        found = [lst["ListenerArn"] for lst in listeners if lst.get("Port") == input.port]
        if not found:
            ports = sorted(lst.get("Port") for lst in listeners)
            raise ApplicationError(
                f"ALB {input.load_balancer} has no listener on port {input.port} (ports: {ports})",
                type=errors.NOT_FOUND,
                non_retryable=True,
            )
        groups: dict[str, str] = {}
        if input.target_groups:
            with aws_errors(f"looking up target groups {', '.join(input.target_groups)}"):
                described = elb.describe_target_groups(Names=list(input.target_groups))["TargetGroups"]
            groups = {g["TargetGroupName"]: g["TargetGroupArn"] for g in described}
        return AlbLookup(listener_arn=found[0], target_groups=groups)

    @activity.defn(name="alb_switch_target_group")
    def alb_switch_target_group(self, input: AlbSwitchInput) -> AlbSwitchResult:
        actions, index, current = self._read(input.ref)
        target = input.target_group_arn
        if current.get(target, 0) > 0 and all(w == 0 for arn, w in current.items() if arn != target):
            return AlbSwitchResult(previous=current, changed=False)
        desired = {arn: 0 for arn in current}
        desired[target] = max([100, *current.values()]) if current.get(target, 0) == 0 else current[target]
        desired[target] = min(desired[target], ALB_MAX_WEIGHT)
        self._write(input.ref, actions, index, desired)
        return AlbSwitchResult(previous=current, changed=True)

    def _registered(self, target_group_arn: str, region: str | None) -> list[AlbTargetState]:
        with aws_errors(f"reading targets of {target_group_arn}"):
            described = self._elb(region).describe_target_health(TargetGroupArn=target_group_arn)
        out = []
        for item in described.get("TargetHealthDescriptions", []):
            target = item.get("Target", {})
            state = (item.get("TargetHealth") or {}).get("State", "unknown")
            out.append(AlbTargetState(id=target["Id"], port=target.get("Port"), state=state))
        return out

    @staticmethod
    def _target_params(input: AlbTargetsInput) -> list[dict]:
        if not input.targets:
            raise _invalid("no targets given")
        return [{"Id": t.id, **({"Port": t.port} if t.port is not None else {})} for t in input.targets]

    @activity.defn(name="alb_register_targets")
    def alb_register_targets(self, input: AlbTargetsInput) -> AlbTargetsResult:
        params = self._target_params(input)
        with aws_errors(f"registering targets in {input.target_group_arn}"):
            self._elb(input.region).register_targets(TargetGroupArn=input.target_group_arn, Targets=params)
        registered = [t.id for t in self._registered(input.target_group_arn, input.region) if t.state != "draining"]
        missing = [t.id for t in input.targets if t.id not in registered]
        if missing:
            raise ApplicationError(
                f"targets {missing} are not registered in {input.target_group_arn} after registering them",
                type=errors.VERIFICATION_FAILED,
                non_retryable=True,
            )
        return AlbTargetsResult(registered=registered)

    @activity.defn(name="alb_deregister_targets")
    def alb_deregister_targets(self, input: AlbTargetsInput) -> AlbTargetsResult:
        self._target_params(input)
        present = {(t.id, t.port) for t in self._registered(input.target_group_arn, input.region) if t.state != "draining"}
        present_ids = {i for i, _ in present}
        todo = [
            {"Id": t.id, **({"Port": t.port} if t.port is not None else {})}
            for t in input.targets
            if t.id in present_ids
        ]
        if todo:
            with aws_errors(f"deregistering targets from {input.target_group_arn}"):
                self._elb(input.region).deregister_targets(TargetGroupArn=input.target_group_arn, Targets=todo)
        registered = [t.id for t in self._registered(input.target_group_arn, input.region) if t.state != "draining"]
        return AlbTargetsResult(registered=registered)

    @activity.defn(name="alb_target_health")
    def alb_target_health(self, input: AlbTargetGroupRef) -> AlbTargetHealth:
        return AlbTargetHealth(targets=self._registered(input.target_group_arn, input.region))


# --------------------------------------------------------------------------------------------------- Route53
def _fqdn(name: str) -> str:
    name = name.strip().lower().replace("\\052", "*")
    return name if name.endswith(".") else name + "."


def _record_key(record: RecordSet) -> tuple[str, str, str | None]:
    return (_fqdn(record.name), record.type.upper(), record.set_identifier)


class Route53Activities:
    """DNS records by UPSERT only: weighted, failover, simple and alias records."""

    def __init__(self, clients: AwsClients, *, wait_delay: float = 5.0, wait_attempts: int = 60) -> None:
        self._clients = clients
        self._wait_delay = wait_delay
        self._wait_attempts = wait_attempts

    @property
    def _r53(self) -> Any:
        return self._clients.client("route53")

    @staticmethod
    def _validate(record: RecordSet) -> None:
        where = f"record {record.name} {record.type}"
        if record.weight is not None and not 0 <= record.weight <= ROUTE53_MAX_WEIGHT:
            raise _invalid(f"{where}: weight {record.weight} is outside 0..{ROUTE53_MAX_WEIGHT} (the Route53 limit)")
        if record.weight is not None and record.failover is not None:
            raise _invalid(f"{where}: a record is either weighted or failover, not both")
        if (record.weight is not None or record.failover is not None) and not record.set_identifier:
            raise _invalid(f"{where}: weighted and failover records need a set_identifier")
        if record.set_identifier and record.weight is None and record.failover is None:
            raise _invalid(f"{where}: set_identifier given without weight or failover routing")
        if record.alias_target is not None:
            if record.values or record.ttl is not None:
                raise _invalid(f"{where}: an alias record has no values or TTL")
        elif not record.values:
            raise _invalid(f"{where}: no values")

    @staticmethod
    def _to_aws(record: RecordSet) -> dict:
        rrset: dict[str, Any] = {"Name": _fqdn(record.name), "Type": record.type.upper()}
        if record.set_identifier:
            rrset["SetIdentifier"] = record.set_identifier
        if record.weight is not None:
            rrset["Weight"] = record.weight
        if record.failover:
            rrset["Failover"] = record.failover
        if record.health_check_id:
            rrset["HealthCheckId"] = record.health_check_id
        if record.alias_target is not None:
            rrset["AliasTarget"] = {
                "HostedZoneId": record.alias_target.hosted_zone_id,
                "DNSName": record.alias_target.dns_name,
                "EvaluateTargetHealth": record.alias_target.evaluate_target_health,
            }
        else:
            rrset["TTL"] = record.ttl if record.ttl is not None else 60
            rrset["ResourceRecords"] = [{"Value": v} for v in record.values]
        return rrset

    @staticmethod
    def _from_aws(rrset: dict) -> RecordSet:
        alias = rrset.get("AliasTarget")
        return RecordSet(
            name=_fqdn(rrset["Name"]),
            type=rrset["Type"],
            ttl=rrset.get("TTL") if not alias else None,
            values=[r["Value"] for r in rrset.get("ResourceRecords", [])],
            set_identifier=rrset.get("SetIdentifier"),
            weight=rrset.get("Weight"),
            failover=rrset.get("Failover"),
            health_check_id=rrset.get("HealthCheckId"),
            alias_target=AliasTarget(
                dns_name=alias["DNSName"],
                hosted_zone_id=alias["HostedZoneId"],
                evaluate_target_health=bool(alias.get("EvaluateTargetHealth", False)),
            )
            if alias
            else None,
        )

    @staticmethod
    def _normalised(record: RecordSet) -> RecordSet:
        data = record.model_dump()
        data["name"] = _fqdn(record.name)
        data["type"] = record.type.upper()
        if record.alias_target is None:
            data["ttl"] = record.ttl if record.ttl is not None else 60
            data["values"] = sorted(record.values)
        else:
            data["alias_target"]["dns_name"] = _fqdn(record.alias_target.dns_name)
        return RecordSet.model_validate(data)

    def _list(self, zone_id: str, name: str, rtype: str | None) -> list[RecordSet]:
        wanted = _fqdn(name)
        params: dict[str, Any] = {"HostedZoneId": zone_id, "StartRecordName": wanted}
        if rtype:
            params["StartRecordType"] = rtype.upper()
        found: list[RecordSet] = []
        with aws_errors(f"listing records {wanted} in zone {zone_id}"):
            while True:
                page = self._r53.list_resource_record_sets(**params)
                for rrset in page.get("ResourceRecordSets", []):
                    if _fqdn(rrset["Name"]) == wanted and (not rtype or rrset["Type"] == rtype.upper()):
                        found.append(self._from_aws(rrset))
                    elif found:
                        return found  # AWS lists a name's records together: past them, we are done
                if not page.get("IsTruncated"):
                    return found
                params = {"HostedZoneId": zone_id, "StartRecordName": page["NextRecordName"]}
                if page.get("NextRecordType"):
                    params["StartRecordType"] = page["NextRecordType"]
                if page.get("NextRecordIdentifier"):
                    params["StartRecordIdentifier"] = page["NextRecordIdentifier"]

    def _wait_insync(self, change_id: str) -> None:
        for _ in range(self._wait_attempts):
            with aws_errors(f"waiting for Route53 change {change_id}"):
                status = self._r53.get_change(Id=change_id)["ChangeInfo"]["Status"]
            _heartbeat(status)
            if status == "INSYNC":
                return
            time.sleep(self._wait_delay)
        raise ApplicationError(
            f"Route53 change {change_id} not INSYNC after {self._wait_attempts * self._wait_delay:.0f}s",
            type=errors.DEADLINE_EXCEEDED,
            non_retryable=True,
        )

    @activity.defn(name="route53_upsert_records")
    def route53_upsert_records(self, input: Route53UpsertInput) -> Route53Records:
        if not input.records:
            raise _invalid("no records given")
        keys = [_record_key(r) for r in input.records]
        if len(set(keys)) != len(keys):
            raise _invalid("the same record (name, type, set_identifier) is given twice")
        for record in input.records:
            self._validate(record)
        changes = [{"Action": "UPSERT", "ResourceRecordSet": self._to_aws(r)} for r in input.records]
        with aws_errors(f"upserting {len(changes)} record(s) in zone {input.zone_id}"):
            change = self._r53.change_resource_record_sets(
                HostedZoneId=input.zone_id,
                ChangeBatch={"Comment": "runbook upsert", "Changes": changes},
            )
        self._wait_insync(change["ChangeInfo"]["Id"])
        out: list[RecordSet] = []
        # one read-back per (name, type): a failover pair (PRIMARY and SECONDARY) shares one listing, and Route53
        # allows five API requests a second per account
        listed: dict[tuple[str, str], list[RecordSet]] = {}
        for record in input.records:
            want = self._normalised(record)
            key = (_fqdn(record.name), record.type.upper())
            if key not in listed:
                listed[key] = self._list(input.zone_id, record.name, record.type)
            got = [self._normalised(r) for r in listed[key] if r.set_identifier == record.set_identifier]
            if got != [want]:
                raise ApplicationError(
                    f"record {want.name} {want.type} {want.set_identifier or ''} read back as "
                    f"{[g.model_dump(exclude_none=True) for g in got]} after upserting {want.model_dump(exclude_none=True)}",
                    type=errors.VERIFICATION_FAILED,
                    non_retryable=True,
                )
            out.append(got[0])
        return Route53Records(records=out)

    @activity.defn(name="route53_get_records")
    def route53_get_records(self, input: Route53QueryInput) -> Route53Records:
        return Route53Records(records=self._list(input.zone_id, input.name, input.type))


# ------------------------------------------------------------------------------------------------------- RDS
_RDS_FAILED_STATES = {
    "failed",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "incompatible-option-group",
    "incompatible-credentials",
    "inaccessible-encryption-credentials",
    "inaccessible-encryption-credentials-recoverable",
    "storage-full",
    "deleting",
}


class RdsActivities:
    """RDS instances, snapshots and replicas. Every input names its region (cross-region DR needs two)."""

    def __init__(
        self,
        clients: AwsClients,
        *,
        describe: Callable[[str, str], RdsInstance] | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clients = clients
        self._describe_seam = describe
        self._sleep = sleep or self._cancellable_sleep
        self._clock = clock

    def _rds(self, region: str) -> Any:
        return self._clients.client("rds", region)

    @staticmethod
    def _cancellable_sleep(seconds: float) -> None:
        try:
            activity.wait_for_cancelled_sync(timeout=seconds)
        except RuntimeError:  # not in an activity
            time.sleep(seconds)

    # -- describe
    def _raw(self, identifier: str, region: str) -> dict | None:
        try:
            with aws_errors(f"describing RDS instance {identifier} in {region}"):
                found = self._rds(region).describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
        except ApplicationError as err:
            if err.type == errors.NOT_FOUND:
                return None
            raise
        return found[0] if found else None

    def _tags(self, raw: dict, region: str) -> dict[str, str]:
        tags = raw.get("TagList")
        if tags is None:
            with aws_errors(f"reading tags of {raw['DBInstanceArn']}"):
                tags = self._rds(region).list_tags_for_resource(ResourceName=raw["DBInstanceArn"])["TagList"]
        return {t["Key"]: t["Value"] for t in tags}

    def _to_instance(self, raw: dict, region: str) -> RdsInstance:
        endpoint = raw.get("Endpoint") or {}
        tags = self._tags(raw, region)
        return RdsInstance(
            identifier=raw["DBInstanceIdentifier"],
            status=raw.get("DBInstanceStatus", ""),
            exists=True,
            endpoint=endpoint.get("Address"),
            port=endpoint.get("Port"),
            engine=raw.get("Engine", ""),
            read_replica_source=raw.get("ReadReplicaSourceDBInstanceIdentifier"),
            replicas=list(raw.get("ReadReplicaDBInstanceIdentifiers", [])),
            arn=raw.get("DBInstanceArn", ""),
            promoted=tags.get(PROMOTED_TAG) == "true",
            restored_from=tags.get(RESTORED_FROM_TAG),
            parameter_groups=sorted(g["DBParameterGroupName"] for g in raw.get("DBParameterGroups", [])),
        )

    def _describe(self, identifier: str, region: str) -> RdsInstance:
        if self._describe_seam is not None:
            return self._describe_seam(identifier, region)
        raw = self._raw(identifier, region)
        if raw is None:
            return RdsInstance(identifier=identifier, exists=False)
        return self._to_instance(raw, region)

    def _require(self, identifier: str, region: str) -> RdsInstance:
        inst = self._describe(identifier, region)
        if not inst.exists:
            raise ApplicationError(
                f"RDS instance {identifier} does not exist in {region}", type=errors.NOT_FOUND, non_retryable=True
            )
        return inst

    def _tag(self, arn: str, region: str, key: str, value: str) -> None:
        with aws_errors(f"tagging {arn}"):
            self._rds(region).add_tags_to_resource(ResourceName=arn, Tags=[{"Key": key, "Value": value}])

    @activity.defn(name="rds_describe_instance")
    def rds_describe_instance(self, input: RdsInstanceRef) -> RdsInstance:
        return self._describe(input.identifier, input.region)

    # -- snapshots
    @activity.defn(name="rds_latest_snapshot")
    def rds_latest_snapshot(self, input: RdsSnapshotQuery) -> RdsSnapshot:
        rds = self._rds(input.region)
        candidates: list[dict] = []
        if input.snapshot_identifier:
            with aws_errors(f"describing snapshot {input.snapshot_identifier} in {input.region}"):
                candidates = rds.describe_db_snapshots(DBSnapshotIdentifier=input.snapshot_identifier)["DBSnapshots"]
        else:
            for kind in input.kinds:
                with aws_errors(f"listing {kind} snapshots of {input.instance_identifier} in {input.region}"):
                    paginator = rds.get_paginator("describe_db_snapshots")
                    for page in paginator.paginate(DBInstanceIdentifier=input.instance_identifier, SnapshotType=kind):
                        candidates.extend(page.get("DBSnapshots", []))
        usable = [
            s
            for s in candidates
            if s.get("Status") == "available"
            and s.get("SnapshotCreateTime") is not None
            and (input.snapshot_identifier or s.get("SnapshotType") in input.kinds)
        ]
        if not usable:
            what = input.snapshot_identifier or f"{'/'.join(input.kinds)} snapshot of {input.instance_identifier}"
            raise ApplicationError(
                f"no available {what} in {input.region}", type=errors.NOT_FOUND, non_retryable=True
            )
        newest = max(usable, key=lambda s: (s["SnapshotCreateTime"], s["DBSnapshotIdentifier"]))
        return RdsSnapshot(
            identifier=newest["DBSnapshotIdentifier"],
            created_at=newest["SnapshotCreateTime"],
            instance_identifier=newest.get("DBInstanceIdentifier", ""),
            engine=newest.get("Engine", ""),
            kind=newest.get("SnapshotType", ""),
            arn=newest.get("DBSnapshotArn", ""),
        )

    @activity.defn(name="rds_restore_snapshot")
    def rds_restore_snapshot(self, input: RdsRestoreInput) -> RdsInstance:
        existing = self._describe(input.target_identifier, input.region)
        if existing.exists:
            return self._reuse(existing, input)
        params: dict[str, Any] = {
            "DBInstanceIdentifier": input.target_identifier,
            "DBSnapshotIdentifier": input.snapshot_identifier,
            "Tags": [{"Key": RESTORED_FROM_TAG, "Value": input.snapshot_identifier}],
        }
        if input.instance_class:
            params["DBInstanceClass"] = input.instance_class
        try:
            with aws_errors(f"restoring {input.snapshot_identifier} as {input.target_identifier}"):
                raw = self._rds(input.region).restore_db_instance_from_db_snapshot(**params)["DBInstance"]
        except ApplicationError as err:
            if "AlreadyExists" not in str(err):
                raise
            # A concurrent attempt won the race: reuse its instance if it is ours.
            return self._reuse(self._require(input.target_identifier, input.region), input)
        inst = self._to_instance(raw, input.region)
        if inst.restored_from != input.snapshot_identifier:  # not every API echoes tags: make sure it is marked
            self._tag(inst.arn, input.region, RESTORED_FROM_TAG, input.snapshot_identifier)
            inst = inst.model_copy(update={"restored_from": input.snapshot_identifier})
        return inst

    @staticmethod
    def _reuse(existing: RdsInstance, input: RdsRestoreInput) -> RdsInstance:
        if existing.restored_from == input.snapshot_identifier:
            return existing
        raise _invalid(
            f"RDS instance {input.target_identifier} already exists in {input.region} and was not restored from "
            f"{input.snapshot_identifier} (restored-from: {existing.restored_from or 'unknown'}): choose another "
            "target identifier or delete it"
        )

    # -- waiting
    def _wait_started_at(self) -> float:
        try:
            info = activity.info()
        except RuntimeError:
            return self._clock()
        if info.heartbeat_details:
            last = info.heartbeat_details[-1]
            if isinstance(last, dict) and "since" in last:
                return float(last["since"])
        if info.attempt > 1 and info.scheduled_time.timestamp() > 0:
            return info.scheduled_time.timestamp()
        return self._clock()

    @activity.defn(name="rds_wait_available")
    def rds_wait_available(self, input: RdsWaitInput) -> RdsInstance:
        since = self._wait_started_at()
        while True:
            inst = self._describe(input.identifier, input.region)
            _heartbeat({"status": inst.status if inst.exists else "missing", "since": since})
            if not inst.exists:
                raise ApplicationError(
                    f"RDS instance {input.identifier} does not exist in {input.region} (deleted while waiting?)",
                    type=errors.NOT_FOUND,
                    non_retryable=True,
                )
            if inst.status == "available":
                return inst
            if inst.status in _RDS_FAILED_STATES:
                raise ApplicationError(
                    f"RDS instance {input.identifier} is {inst.status}: it will not become available by waiting",
                    type=errors.VERIFICATION_FAILED,
                    non_retryable=True,
                )
            elapsed = self._clock() - since
            remaining = input.deadline_seconds - elapsed
            if remaining <= 0:
                raise ApplicationError(
                    f"RDS instance {input.identifier} still {inst.status} after {elapsed:.0f}s "
                    f"(deadline {input.deadline_seconds:.0f}s)",
                    type=errors.DEADLINE_EXCEEDED,
                    non_retryable=True,
                )
            self._sleep(min(input.poll_seconds, remaining))
            with contextlib.suppress(RuntimeError):
                if activity.is_cancelled():
                    raise CancelledError("rds_wait_available cancelled")

    # -- lifecycle
    @activity.defn(name="rds_delete_instance")
    def rds_delete_instance(self, input: RdsDeleteInput) -> RdsDeleteResult:
        """Delete without a final snapshot; safe to retry (gone or deleting is done). With ``wait_gone_seconds`` it
        returns only once the identifier is free (cancellable, heartbeats)."""
        since = self._wait_started_at()
        inst = self._describe(input.identifier, input.region)
        if not inst.exists:
            return RdsDeleteResult(deleted=False, existed=False)
        if inst.status != "deleting":
            try:
                with aws_errors(f"deleting RDS instance {input.identifier} in {input.region}"):
                    self._rds(input.region).delete_db_instance(
                        DBInstanceIdentifier=input.identifier, SkipFinalSnapshot=True, DeleteAutomatedBackups=False
                    )
            except ApplicationError as err:
                if err.type == errors.NOT_FOUND:  # gone between describe and delete
                    return RdsDeleteResult(deleted=False, existed=False)
                raise
        while input.wait_gone_seconds > 0:
            gone = self._describe(input.identifier, input.region)
            _heartbeat({"status": gone.status if gone.exists else "gone", "since": since})
            if not gone.exists:
                break
            elapsed = self._clock() - since
            if elapsed >= input.wait_gone_seconds:
                raise ApplicationError(
                    f"RDS instance {input.identifier} still {gone.status} after {elapsed:.0f}s "
                    f"(deadline {input.wait_gone_seconds:.0f}s)",
                    type=errors.DEADLINE_EXCEEDED,
                    non_retryable=True,
                )
            self._sleep(min(input.poll_seconds, input.wait_gone_seconds - elapsed))
            with contextlib.suppress(RuntimeError):
                if activity.is_cancelled():
                    raise CancelledError("rds_delete_instance cancelled")
        return RdsDeleteResult(deleted=True, existed=True)

    @activity.defn(name="rds_promote_replica")
    def rds_promote_replica(self, input: RdsInstanceRef) -> RdsInstance:
        inst = self._require(input.identifier, input.region)
        if inst.promoted or not inst.read_replica_source:
            return inst
        with aws_errors(f"promoting replica {input.identifier} in {input.region}"):
            self._rds(input.region).promote_read_replica(DBInstanceIdentifier=input.identifier)
        # moto (and AWS while the promotion runs) still shows the replica link: the tag records that we did it.
        self._tag(inst.arn, input.region, PROMOTED_TAG, "true")
        return self._require(input.identifier, input.region)

    @activity.defn(name="rds_create_replica")
    def rds_create_replica(self, input: RdsCreateReplicaInput) -> RdsInstance:
        source = input.source_arn_or_id
        source_id = source.rsplit(":", 1)[-1]
        existing = self._describe(input.replica_identifier, input.region)
        if existing.exists:
            if existing.read_replica_source and existing.read_replica_source.rsplit(":", 1)[-1] == source_id:
                return existing
            raise _invalid(
                f"RDS instance {input.replica_identifier} already exists in {input.region} but is not a replica of "
                f"{source_id} (source: {existing.read_replica_source or 'none'})"
            )
        cross_region = input.source_region != input.region
        if cross_region and not source.startswith("arn:"):
            source = self._require(source, input.source_region).arn
        params: dict[str, Any] = {"DBInstanceIdentifier": input.replica_identifier, "SourceDBInstanceIdentifier": source}
        if cross_region:
            params["SourceRegion"] = input.source_region
        if input.instance_class:
            params["DBInstanceClass"] = input.instance_class
        if input.parameter_group:
            params["DBParameterGroupName"] = input.parameter_group
        with aws_errors(f"creating replica {input.replica_identifier} of {source_id} in {input.region}"):
            raw = self._rds(input.region).create_db_instance_read_replica(**params)["DBInstance"]
        inst = self._to_instance(raw, input.region)
        if inst.promoted:  # a new replica is not promoted: moto copies the source's tags (the tag is ours to clear)
            with aws_errors(f"clearing {PROMOTED_TAG} on the new replica {input.replica_identifier}"):
                self._rds(input.region).remove_tags_from_resource(ResourceName=inst.arn, TagKeys=[PROMOTED_TAG])
            inst = self._require(input.replica_identifier, input.region)
        return inst

    @activity.defn(name="rds_set_parameter_group")
    def rds_set_parameter_group(self, input: RdsParameterGroupInput) -> RdsInstance:
        """Give an instance exactly this parameter group (applied immediately), read back; a no-op if it has it."""
        inst = self._require(input.identifier, input.region)
        if inst.parameter_groups == [input.parameter_group]:
            return inst
        with aws_errors(f"setting parameter group {input.parameter_group} on {input.identifier} in {input.region}"):
            self._rds(input.region).modify_db_instance(
                DBInstanceIdentifier=input.identifier, DBParameterGroupName=input.parameter_group, ApplyImmediately=True
            )
        inst = self._require(input.identifier, input.region)
        if inst.parameter_groups != [input.parameter_group]:
            raise ApplicationError(
                f"{input.identifier} has parameter groups {inst.parameter_groups} after setting {input.parameter_group}",
                type=errors.VERIFICATION_FAILED,
                non_retryable=True,
            )
        return inst

    @activity.defn(name="rds_replica_lag")
    def rds_replica_lag(self, input: RdsInstanceRef) -> RdsReplicaLag:
        now = datetime.now(timezone.utc)
        with aws_errors(f"reading ReplicaLag of {input.identifier} in {input.region}"):
            stats = self._clients.client("cloudwatch", input.region).get_metric_statistics(
                Namespace="AWS/RDS",
                MetricName="ReplicaLag",
                Dimensions=[{"Name": "DBInstanceIdentifier", "Value": input.identifier}],
                StartTime=now - timedelta(minutes=5),
                EndTime=now,
                Period=60,
                Statistics=["Maximum"],
            )
        points = [p["Maximum"] for p in stats.get("Datapoints", []) if "Maximum" in p]
        return RdsReplicaLag(lag_seconds=max(points) if points else None)

    @activity.defn(name="rds_set_writes_blocked")
    def rds_set_writes_blocked(self, input: RdsFenceInput) -> RdsFenceResult:
        """Best effort by design: failover must go on when the old primary's region is down, so an instance we
        cannot reach is reported (fenced=False, reason) rather than raised."""
        how = f"parameter-group:{input.parameter_group}" if input.parameter_group else "stopped"
        try:
            # one describe gives both the state and the parameter groups (the seam, in tests, describes separately)
            raw: dict | None = None
            if self._describe_seam is None:
                raw = self._raw(input.identifier, input.region)
                inst = self._to_instance(raw, input.region) if raw else RdsInstance(identifier=input.identifier, exists=False)
            else:
                inst = self._describe(input.identifier, input.region)
            if not inst.exists:
                return RdsFenceResult(fenced=False, how=how, reason=f"{input.identifier} not found in {input.region}")
            rds = self._rds(input.region)
            if input.parameter_group:
                if raw is None:
                    raw = self._raw(input.identifier, input.region) or {}
                groups = {g["DBParameterGroupName"] for g in raw.get("DBParameterGroups", [])}
                if input.parameter_group not in groups:
                    with aws_errors(f"applying parameter group {input.parameter_group} to {input.identifier}"):
                        rds.modify_db_instance(
                            DBInstanceIdentifier=input.identifier,
                            DBParameterGroupName=input.parameter_group,
                            ApplyImmediately=True,
                        )
                    raw = self._raw(input.identifier, input.region) or {}
                    groups = {g["DBParameterGroupName"] for g in raw.get("DBParameterGroups", [])}
                if input.parameter_group not in groups:
                    return RdsFenceResult(
                        fenced=False, how=how, reason=f"parameter group still {sorted(groups)} after modifying"
                    )
                return RdsFenceResult(fenced=True, how=how, reason="read-only parameter group applied")
            if inst.status in ("stopped", "stopping"):
                return RdsFenceResult(fenced=True, how=how, reason=f"instance already {inst.status}")
            with aws_errors(f"stopping {input.identifier} in {input.region}"):
                rds.stop_db_instance(DBInstanceIdentifier=input.identifier)
            return RdsFenceResult(fenced=True, how=how, reason="stop requested")
        except ApplicationError as err:
            return RdsFenceResult(fenced=False, how=how, reason=str(err))


# -------------------------------------------------------------------------------------------------------- S3
class S3Activities:
    """JSON documents in versioned buckets (run records, restore-drill reports, state hand-offs)."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    @property
    def _s3(self) -> Any:
        return self._clients.client("s3")

    @staticmethod
    def _body(document: dict) -> bytes:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()

    def _ensure_bucket(self, bucket: str, region: str | None, versioned: bool) -> None:
        s3 = self._clients.client("s3", region)
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as err:
            if classify(err)[0] != errors.NOT_FOUND:
                with aws_errors(f"checking bucket {bucket}"):
                    raise
            region_name = region or self._clients.default_region
            params: dict[str, Any] = {"Bucket": bucket}
            if region_name != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": region_name}
            try:
                with aws_errors(f"creating bucket {bucket} in {region_name}"):
                    s3.create_bucket(**params)
            except ApplicationError as created:
                if "BucketAlreadyOwnedByYou" not in str(created):
                    raise
        if versioned:
            with aws_errors(f"enabling versioning on {bucket}"):
                if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
                    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    @activity.defn(name="s3_put_json")
    def s3_put_json(self, input: S3PutJsonInput) -> S3ObjectRef:
        self._ensure_bucket(input.bucket, input.region, input.ensure_versioned)
        s3 = self._clients.client("s3", input.region)
        body = self._body(input.document)
        try:
            current = s3.get_object(Bucket=input.bucket, Key=input.key)
            if current["Body"].read() == body:  # a retry of a put that landed: no new version
                return S3ObjectRef(
                    bucket=input.bucket, key=input.key, version_id=current.get("VersionId"), etag=current.get("ETag", "")
                )
        except ClientError as err:
            if classify(err)[0] != errors.NOT_FOUND:
                with aws_errors(f"reading s3://{input.bucket}/{input.key}"):
                    raise
        with aws_errors(f"writing s3://{input.bucket}/{input.key}"):
            put = s3.put_object(Bucket=input.bucket, Key=input.key, Body=body, ContentType="application/json")
        return S3ObjectRef(bucket=input.bucket, key=input.key, version_id=put.get("VersionId"), etag=put.get("ETag", ""))

    @activity.defn(name="s3_get_json")
    def s3_get_json(self, input: S3ObjectKey) -> S3JsonDocument:
        try:
            obj = self._s3.get_object(Bucket=input.bucket, Key=input.key)
        except ClientError as err:
            if classify(err)[0] == errors.NOT_FOUND:
                return S3JsonDocument()
            with aws_errors(f"reading s3://{input.bucket}/{input.key}"):
                raise
        try:
            document = json.loads(obj["Body"].read())
        except ValueError as err:
            raise _invalid(f"s3://{input.bucket}/{input.key} is not JSON: {err}") from err
        return S3JsonDocument(document=document, version_id=obj.get("VersionId"))

    @activity.defn(name="s3_delete_object")
    def s3_delete_object(self, input: S3ObjectKey) -> S3DeleteResult:
        try:
            self._s3.head_object(Bucket=input.bucket, Key=input.key)
        except ClientError as err:
            if classify(err)[0] == errors.NOT_FOUND:
                return S3DeleteResult(deleted=False, existed=False)
            with aws_errors(f"checking s3://{input.bucket}/{input.key}"):
                raise
        with aws_errors(f"deleting s3://{input.bucket}/{input.key}"):
            self._s3.delete_object(Bucket=input.bucket, Key=input.key)
        return S3DeleteResult(deleted=True, existed=True)

    @activity.defn(name="s3_bucket_exists")
    def s3_bucket_exists(self, input: S3BucketRef) -> S3BucketInfo:
        """Read-only: whether a bucket exists, for runbooks that validate their targets before changing anything.
        A bucket we may not read raises AccessDenied; a malformed name raises InvalidInput."""
        try:
            self._clients.client("s3", input.region).head_bucket(Bucket=input.bucket)
        except ParamValidationError as err:
            raise _invalid(f"{input.bucket!r} is not a bucket name: {err}") from err
        except ClientError as err:
            if classify(err)[0] == errors.NOT_FOUND:
                return S3BucketInfo(bucket=input.bucket, exists=False)
            with aws_errors(f"checking bucket {input.bucket}"):
                raise
        return S3BucketInfo(bucket=input.bucket, exists=True)

    @activity.defn(name="s3_latest_object")
    def s3_latest_object(self, input: S3LatestQuery) -> S3ObjectInfo:
        newest: dict | None = None
        with aws_errors(f"listing s3://{input.bucket}/{input.prefix}"):
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=input.bucket, Prefix=input.prefix):
                for obj in page.get("Contents", []):
                    if newest is None or (obj["LastModified"], obj["Key"]) > (newest["LastModified"], newest["Key"]):
                        newest = obj
        if newest is None:
            raise ApplicationError(
                f"no object under s3://{input.bucket}/{input.prefix}", type=errors.NOT_FOUND, non_retryable=True
            )
        with aws_errors(f"reading s3://{input.bucket}/{newest['Key']}"):
            head = self._s3.head_object(Bucket=input.bucket, Key=newest["Key"])
        return S3ObjectInfo(
            key=newest["Key"], last_modified=newest["LastModified"], size=newest["Size"], version_id=head.get("VersionId")
        )


def all_activities(clients: AwsClients) -> list[Callable]:
    """Every AWS activity method, bound to ``clients`` (used by workers/activities.py)."""
    elb, r53, rds, s3 = ElbActivities(clients), Route53Activities(clients), RdsActivities(clients), S3Activities(clients)
    return [
        elb.alb_get_weights,
        elb.alb_set_weights,
        elb.alb_switch_target_group,
        elb.alb_find_listener,
        elb.alb_register_targets,
        elb.alb_deregister_targets,
        elb.alb_target_health,
        r53.route53_upsert_records,
        r53.route53_get_records,
        rds.rds_describe_instance,
        rds.rds_latest_snapshot,
        rds.rds_restore_snapshot,
        rds.rds_wait_available,
        rds.rds_delete_instance,
        rds.rds_promote_replica,
        rds.rds_create_replica,
        rds.rds_replica_lag,
        rds.rds_set_writes_blocked,
        rds.rds_set_parameter_group,
        s3.s3_put_json,
        s3.s3_get_json,
        s3.s3_delete_object,
        s3.s3_latest_object,
        s3.s3_bucket_exists,
    ]

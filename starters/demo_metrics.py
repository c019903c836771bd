"""The local demo's metric emitter: the demo service "checkout" publishing its health to CloudWatch (moto).

Part of the local stack, not of the runbook: ``runbook dev`` calls ``run_emitter(stop_event, state_dir)`` in a
thread. Every ``RUNBOOK_DEMO_METRICS_INTERVAL`` seconds (default 5) it publishes, in namespace ``Demo/Service``
with dimensions ``Service=checkout`` and ``Version=<v>``, the metrics the canary's default analysis template reads:
``ErrorRate`` (%), ``LatencyP95`` and ``LatencyP99`` (s; the blue-green bake reads p99), ``CPUUtilization`` (%),
``MemoryUtilization`` (%), for every version the demo serves: the stable version (``stable``), the blue-green
colours' versions (``starters.demo_services``: blue ``v1``, green ``v2``, so going back with ``image=v1`` is measured
too) and the new versions listed in ``RUNBOOK_DEMO_CANARY_VERSIONS`` (default ``v2``). It also
publishes ``AWS/RDS`` ``ReplicaLag`` (about 2 s) for the replicas in ``RUNBOOK_DEMO_REPLICAS`` (default
``us-east-1:orders-db-failback,us-west-2:orders-db-replica``), which moto does not emit itself, and the service's
``Availability`` (%, dimension ``Service=checkout`` only, about 99.97), what the release's error-budget gate reads.

The switch that makes the canary versions bad (error rate about 3 %, latency p95 about 2.4 s; the other versions
stay healthy):
- create the file ``<state>/demo/canary-bad`` (``touch .state/demo/canary-bad``; delete it to heal), or
- start the stack with ``RUNBOOK_DEMO_CANARY_BAD=1``.
The file is re-read at every tick, so the switch works on a running stack.

Run alone (against AWS_ENDPOINT_URL): ``python -m starters.demo_metrics [--once] [--state .state]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NAMESPACE = "Demo/Service"
SERVICE = "checkout"
HEALTHY = {"ErrorRate": 0.15, "LatencyP95": 0.35, "LatencyP99": 0.6, "CPUUtilization": 42.0, "MemoryUtilization": 58.0}
BAD = {"ErrorRate": 3.0, "LatencyP95": 2.4, "LatencyP99": 3.1, "CPUUtilization": 71.0, "MemoryUtilization": 66.0}
UNITS = {
    "ErrorRate": "Percent",
    "LatencyP95": "Seconds",
    "LatencyP99": "Seconds",
    "CPUUtilization": "Percent",
    "MemoryUtilization": "Percent",
}
# RDS ReplicaLag (AWS/RDS, seconds) of the demo's replicas, "<region>:<identifier>": the failover drill's automatic
# failback waits for its replica (orders-db-failback in us-east-1) to catch up, and moto publishes no RDS metrics.
DEMO_REPLICAS = "us-east-1:orders-db-failback,us-west-2:orders-db-replica"
REPLICA_LAG_S = 2.0
AVAILABILITY = 99.97  # percent: 70 % of a 99.9 % objective's error budget left


def availability(now: datetime) -> dict[str, Any]:
    """The service's availability (the release's error-budget gate: Demo/Service Availability by Service)."""
    return {"MetricName": "Availability", "Dimensions": [{"Name": "Service", "Value": SERVICE}],
            "Timestamp": now, "Value": AVAILABILITY, "Unit": "Percent"}


def canary_bad(state_dir: Path) -> bool:
    """The documented switch: ``<state>/demo/canary-bad`` exists, or RUNBOOK_DEMO_CANARY_BAD is 1/true/yes."""
    if os.environ.get("RUNBOOK_DEMO_CANARY_BAD", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return (Path(state_dir) / "demo" / "canary-bad").exists()


def sample(bad: bool, rng: random.Random) -> dict[str, float]:
    """One reading per metric: the bad ones when ``bad``; a little jitter."""
    base = BAD if bad else HEALTHY
    return {name: round(value * rng.uniform(0.9, 1.1), 4) for name, value in base.items()}


def served_versions(canaries: list[str]) -> list[str]:
    """Every version the demo serves, once each: stable, the blue-green colours' versions, the canary versions."""
    from starters.demo_services import versions as colour_versions

    return list(dict.fromkeys(["stable", *colour_versions().values(), *canaries]))


def publish_once(cloudwatch: Any, state_dir: Path, versions: list[str], rng: random.Random | None = None,
                 bad_versions: list[str] | None = None, with_availability: bool = False) -> dict[str, dict[str, float]]:
    """One reading of every metric for stable and each of ``versions`` (and the service's availability with
    ``with_availability``), in one request; while the switch is on, those in ``bad_versions`` (default: all of
    ``versions``) read bad."""
    rng = rng or random.Random()
    bad = canary_bad(state_dir)
    bad_versions = versions if bad_versions is None else bad_versions
    now = datetime.now(timezone.utc)
    published: dict[str, dict[str, float]] = {}
    data: list[dict[str, Any]] = [availability(now)] if with_availability else []
    for version in dict.fromkeys(["stable", *versions]):
        values = sample(bad and version in bad_versions and version != "stable", rng)
        data += [
            {
                "MetricName": name,
                "Dimensions": [{"Name": "Service", "Value": SERVICE}, {"Name": "Version", "Value": version}],
                "Timestamp": now,
                "Value": value,
                "Unit": UNITS[name],
            }
            for name, value in values.items()
        ]
        published[version] = values
    cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=data)  # 1000 data at most: 5 a version
    return published


def publish_replica_lag(cloudwatch: dict[str, Any], replicas: list[tuple[str, str]]) -> None:
    """``cloudwatch``: a client per region of ``replicas`` (built once: a boto3 client costs about 0.1 s of CPU);
    one request per region."""
    now = datetime.now(timezone.utc)
    by_region: dict[str, list[dict[str, Any]]] = {}
    for region, identifier in replicas:
        by_region.setdefault(region, []).append({
            "MetricName": "ReplicaLag",
            "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": identifier}],
            "Timestamp": now,
            "Value": REPLICA_LAG_S,
            "Unit": "Seconds",
        })
    for region, data in by_region.items():
        cloudwatch[region].put_metric_data(Namespace="AWS/RDS", MetricData=data)


def run_emitter(stop_event: threading.Event, state_dir: Path | str, session: Any = None) -> None:
    """Publish until ``stop_event`` is set. Errors (moto restarting) are logged and retried at the next tick.
    ``session``: the boto3 session its CloudWatch clients are made from (the local stack passes the one it seeded
    with: a new session loads botocore's endpoint data and the CloudWatch model again); a new one if None."""
    import boto3

    state_dir = Path(state_dir)
    (state_dir / "demo").mkdir(parents=True, exist_ok=True)
    interval = float(os.environ.get("RUNBOOK_DEMO_METRICS_INTERVAL", "5"))
    canaries = [v.strip() for v in os.environ.get("RUNBOOK_DEMO_CANARY_VERSIONS", "v2").split(",") if v.strip()]
    versions = served_versions(canaries)
    session = session or boto3.Session()
    home = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    cloudwatch = session.client("cloudwatch", region_name=home)
    replicas = [
        (region, identifier)
        for region, sep, identifier in (
            item.strip().partition(":") for item in os.environ.get("RUNBOOK_DEMO_REPLICAS", DEMO_REPLICAS).split(",")
        )
        if sep
    ]
    regional = {r: cloudwatch if r == home else session.client("cloudwatch", region_name=r) for r, _ in replicas}
    rng = random.Random()
    was_bad: bool | None = None
    while not stop_event.is_set():
        try:
            publish_once(cloudwatch, state_dir, versions, rng, bad_versions=canaries, with_availability=True)
            publish_replica_lag(regional, replicas)
            bad = canary_bad(state_dir)
            if bad != was_bad:
                log.warning("demo metrics: canary %s is %s", ",".join(canaries), "BAD" if bad else "healthy")
                was_bad = bad
        except Exception as err:  # keep the demo alive across a moto restart
            log.warning("demo metrics: publish failed: %s", err)
        stop_event.wait(interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", default=".state")
    parser.add_argument("--once", action="store_true", help="publish one round and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.once:
        import boto3

        cloudwatch = boto3.client("cloudwatch", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        print(publish_once(cloudwatch, Path(args.state), served_versions(["v2"]), bad_versions=["v2"]))
        return
    stop = threading.Event()
    try:
        run_emitter(stop, args.state)
    except KeyboardInterrupt:
        stop.set()


if __name__ == "__main__":
    main()

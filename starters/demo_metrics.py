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


def publish_availability(cloudwatch: Any) -> None:
    """The service's availability (the release's error-budget gate: Demo/Service Availability by Service)."""
    cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=[{
        "MetricName": "Availability", "Dimensions": [{"Name": "Service", "Value": SERVICE}],
        "Timestamp": datetime.now(timezone.utc), "Value": AVAILABILITY, "Unit": "Percent"}])


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
                 bad_versions: list[str] | None = None) -> dict[str, dict[str, float]]:
    """One reading of every metric for stable and each of ``versions``; while the switch is on, those in
    ``bad_versions`` (default: all of ``versions``) read bad."""
    rng = rng or random.Random()
    bad = canary_bad(state_dir)
    bad_versions = versions if bad_versions is None else bad_versions
    now = datetime.now(timezone.utc)
    published: dict[str, dict[str, float]] = {}
    for version in dict.fromkeys(["stable", *versions]):
        values = sample(bad and version in bad_versions and version != "stable", rng)
        cloudwatch.put_metric_data(
            Namespace=NAMESPACE,
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": "Service", "Value": SERVICE}, {"Name": "Version", "Value": version}],
                    "Timestamp": now,
                    "Value": value,
                    "Unit": UNITS[name],
                }
                for name, value in values.items()
            ],
        )
        published[version] = values
    return published


def publish_replica_lag(cloudwatch: dict[str, Any], replicas: list[tuple[str, str]]) -> None:
    """``cloudwatch``: a client per region of ``replicas`` (built once: a boto3 client costs about 0.1 s of CPU)."""
    now = datetime.now(timezone.utc)
    for region, identifier in replicas:
        cloudwatch[region].put_metric_data(
            Namespace="AWS/RDS",
            MetricData=[
                {
                    "MetricName": "ReplicaLag",
                    "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": identifier}],
                    "Timestamp": now,
                    "Value": REPLICA_LAG_S,
                    "Unit": "Seconds",
                }
            ],
        )


def run_emitter(stop_event: threading.Event, state_dir: Path | str) -> None:
    """Publish until ``stop_event`` is set. Errors (moto restarting) are logged and retried at the next tick."""
    import boto3

    state_dir = Path(state_dir)
    (state_dir / "demo").mkdir(parents=True, exist_ok=True)
    interval = float(os.environ.get("RUNBOOK_DEMO_METRICS_INTERVAL", "5"))
    canaries = [v.strip() for v in os.environ.get("RUNBOOK_DEMO_CANARY_VERSIONS", "v2").split(",") if v.strip()]
    versions = served_versions(canaries)
    cloudwatch = boto3.client("cloudwatch", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    replicas = [
        (region, identifier)
        for region, sep, identifier in (
            item.strip().partition(":") for item in os.environ.get("RUNBOOK_DEMO_REPLICAS", DEMO_REPLICAS).split(",")
        )
        if sep
    ]
    session = boto3.Session()
    regional = {region: session.client("cloudwatch", region_name=region) for region, _ in replicas}
    rng = random.Random()
    was_bad: bool | None = None
    while not stop_event.is_set():
        try:
            publish_once(cloudwatch, state_dir, versions, rng, bad_versions=canaries)
            publish_replica_lag(regional, replicas)
            publish_availability(cloudwatch)
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

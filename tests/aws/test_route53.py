import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import Route53Activities
from core import errors
from core.aws import AliasTarget, RecordSet, Route53QueryInput, Route53UpsertInput


@pytest.fixture
def r53(clients):
    return Route53Activities(clients, wait_delay=0.01)


@pytest.fixture
def zone(clients):
    return clients.client("route53").create_hosted_zone(Name="example.test.", CallerReference="t")["HostedZone"]["Id"]


@pytest.fixture
def run():
    return ActivityEnvironment().run


def weighted(ident, weight, value):
    return RecordSet(name="api.example.test", type="A", ttl=30, values=[value], set_identifier=ident, weight=weight)


def test_upsert_weighted_records_reads_back_and_is_idempotent(r53, run, zone):
    records = [weighted("blue", 100, "10.0.0.1"), weighted("green", 0, "10.0.0.2")]
    out = run(r53.route53_upsert_records, Route53UpsertInput(zone_id=zone, records=records))
    assert [(r.name, r.set_identifier, r.weight, r.values) for r in out.records] == [
        ("api.example.test.", "blue", 100, ["10.0.0.1"]),
        ("api.example.test.", "green", 0, ["10.0.0.2"]),
    ]
    # Same UPSERT again (a retry): succeeds, same records, no duplicates (CREATE would have failed on AWS).
    run(r53.route53_upsert_records, Route53UpsertInput(zone_id=zone, records=records))
    # Shift the weights: absolute values replace the old ones.
    run(
        r53.route53_upsert_records,
        Route53UpsertInput(zone_id=zone, records=[weighted("blue", 0, "10.0.0.1"), weighted("green", 255, "10.0.0.2")]),
    )
    got = run(r53.route53_get_records, Route53QueryInput(zone_id=zone, name="api.example.test.", type="A"))
    assert sorted((r.set_identifier, r.weight) for r in got.records) == [("blue", 0), ("green", 255)]


def test_upsert_failover_and_alias_records(r53, run, zone, clients):
    check = clients.client("route53").create_health_check(
        CallerReference="hc", HealthCheckConfig={"Type": "HTTP", "FullyQualifiedDomainName": "db1.example.test", "Port": 80}
    )["HealthCheck"]["Id"]
    records = [
        RecordSet(name="db.example.test", type="CNAME", ttl=30, values=["db1.example.test"], set_identifier="p",
                  failover="PRIMARY", health_check_id=check),
        RecordSet(name="db.example.test", type="CNAME", ttl=30, values=["db2.example.test"], set_identifier="s",
                  failover="SECONDARY"),
        RecordSet(name="www.example.test", type="A", alias_target=AliasTarget(
            dns_name="demo-alb-1.us-east-1.elb.amazonaws.com", hosted_zone_id="Z35SXDOTRQ7X7K")),
    ]
    out = run(r53.route53_upsert_records, Route53UpsertInput(zone_id=zone, records=records))
    assert [(r.set_identifier, r.failover, r.health_check_id) for r in out.records[:2]] == [
        ("p", "PRIMARY", check), ("s", "SECONDARY", None)]
    assert out.records[2].alias_target.dns_name == "demo-alb-1.us-east-1.elb.amazonaws.com."
    # Fail over: secondary becomes the primary's value by UPSERT.
    swapped = records[0].model_copy(update={"values": ["db2.example.test"]})
    run(r53.route53_upsert_records, Route53UpsertInput(zone_id=zone, records=[swapped]))
    got = run(r53.route53_get_records, Route53QueryInput(zone_id=zone, name="db.example.test", type="CNAME"))
    assert {r.set_identifier: r.values for r in got.records} == {"p": ["db2.example.test"], "s": ["db2.example.test"]}


@pytest.mark.parametrize(
    "record, fragment",
    [
        (weighted("blue", 256, "10.0.0.1"), "outside 0..255"),
        (weighted("blue", -1, "10.0.0.1"), "outside 0..255"),
        (RecordSet(name="a.example.test", type="A", ttl=30, values=["1.1.1.1"], set_identifier="x", weight=10,
                   failover="PRIMARY"), "not both"),
        (RecordSet(name="a.example.test", type="A", ttl=30, values=["1.1.1.1"], weight=10), "set_identifier"),
        (RecordSet(name="a.example.test", type="A", ttl=30), "no values"),
    ],
)
def test_upsert_validates_before_writing(r53, run, zone, record, fragment):
    with pytest.raises(ApplicationError) as err:
        run(r53.route53_upsert_records, Route53UpsertInput(zone_id=zone, records=[record]))
    assert err.value.type == errors.INVALID_INPUT and err.value.non_retryable
    assert fragment in str(err.value)
    got = run(r53.route53_get_records, Route53QueryInput(zone_id=zone, name=record.name, type="A"))
    assert got.records == []


def test_upsert_in_missing_zone_is_not_found(r53, run, aws):
    with pytest.raises(ApplicationError) as err:
        run(r53.route53_upsert_records, Route53UpsertInput(zone_id="ZNOSUCHZONE", records=[weighted("b", 1, "10.0.0.1")]))
    assert err.value.type == errors.NOT_FOUND


def test_get_records_filters_by_name_and_type(r53, run, zone):
    run(r53.route53_upsert_records, Route53UpsertInput(zone_id=zone, records=[
        weighted("blue", 1, "10.0.0.1"),
        RecordSet(name="api.example.test", type="TXT", ttl=60, values=['"v=1"']),
        RecordSet(name="other.example.test", type="A", ttl=60, values=["10.9.9.9"]),
    ]))
    a = run(r53.route53_get_records, Route53QueryInput(zone_id=zone, name="API.example.test", type="A"))
    assert [(r.type, r.values) for r in a.records] == [("A", ["10.0.0.1"])]
    both = run(r53.route53_get_records, Route53QueryInput(zone_id=zone, name="api.example.test"))
    assert sorted(r.type for r in both.records) == ["A", "TXT"]


def test_upsert_read_back_mismatch_is_verification_failed(r53, run, zone, clients, monkeypatch):
    """Another actor (or a lagging read) leaves a different record in place: the upsert must not report success."""
    client = clients.client("route53")
    original = client.change_resource_record_sets

    def clobbering(**kw):
        for change in kw["ChangeBatch"]["Changes"]:
            change["ResourceRecordSet"]["Weight"] = 7
        return original(**kw)

    monkeypatch.setattr(client, "change_resource_record_sets", clobbering)
    with pytest.raises(ApplicationError) as err:
        run(r53.route53_upsert_records, Route53UpsertInput(zone_id=zone, records=[weighted("blue", 100, "10.0.0.1")]))
    assert err.value.type == errors.VERIFICATION_FAILED and "read back" in err.value.message

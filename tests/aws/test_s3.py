import time

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import S3Activities
from core import errors
from core.aws import S3LatestQuery, S3ObjectKey, S3PutJsonInput


@pytest.fixture
def s3(clients):
    return S3Activities(clients)


@pytest.fixture
def run():
    return ActivityEnvironment().run


def test_put_creates_versioned_bucket_and_round_trips(s3, run, clients):
    ref = run(s3.s3_put_json, S3PutJsonInput(bucket="drills", key="orders/1.json", document={"ok": True, "n": 1}))
    assert ref.version_id and ref.etag
    assert clients.client("s3").get_bucket_versioning(Bucket="drills")["Status"] == "Enabled"
    got = run(s3.s3_get_json, S3ObjectKey(bucket="drills", key="orders/1.json"))
    assert got.document == {"ok": True, "n": 1} and got.version_id == ref.version_id


def test_put_same_document_twice_makes_no_new_version(s3, run, clients):
    req = S3PutJsonInput(bucket="drills", key="k.json", document={"b": 2, "a": 1})
    first = run(s3.s3_put_json, req)
    second = run(s3.s3_put_json, req)
    assert second.version_id == first.version_id
    changed = run(s3.s3_put_json, req.model_copy(update={"document": {"a": 2}}))
    assert changed.version_id != first.version_id
    versions = clients.client("s3").list_object_versions(Bucket="drills", Prefix="k.json")["Versions"]
    assert len(versions) == 2


def test_put_in_another_region_creates_bucket_there(s3, run, clients):
    run(s3.s3_put_json, S3PutJsonInput(bucket="west-drills", key="a.json", document={}, region="us-west-2"))
    assert clients.client("s3").get_bucket_location(Bucket="west-drills")["LocationConstraint"] == "us-west-2"


def test_get_missing_and_delete_idempotent(s3, run):
    assert run(s3.s3_get_json, S3ObjectKey(bucket="nobucket", key="x")).document is None
    run(s3.s3_put_json, S3PutJsonInput(bucket="drills", key="x.json", document={"x": 1}))
    assert run(s3.s3_get_json, S3ObjectKey(bucket="drills", key="nokey")).document is None
    assert run(s3.s3_delete_object, S3ObjectKey(bucket="drills", key="x.json")).model_dump() == {"deleted": True, "existed": True}
    assert run(s3.s3_get_json, S3ObjectKey(bucket="drills", key="x.json")).document is None
    assert run(s3.s3_delete_object, S3ObjectKey(bucket="drills", key="x.json")).model_dump() == {"deleted": False, "existed": False}


def test_latest_object_under_prefix(s3, run):
    with pytest.raises(ApplicationError) as err:
        run(s3.s3_latest_object, S3LatestQuery(bucket="nobucket", prefix="reports/"))
    assert err.value.type == errors.NOT_FOUND
    run(s3.s3_put_json, S3PutJsonInput(bucket="drills", key="reports/b.json", document={"n": 1}))
    time.sleep(1.05)  # S3 LastModified has second resolution
    ref = run(s3.s3_put_json, S3PutJsonInput(bucket="drills", key="reports/a.json", document={"n": 2}))
    run(s3.s3_put_json, S3PutJsonInput(bucket="drills", key="other/z.json", document={"n": 3}))
    latest = run(s3.s3_latest_object, S3LatestQuery(bucket="drills", prefix="reports/"))
    assert latest.key == "reports/a.json" and latest.version_id == ref.version_id and latest.size > 0
    with pytest.raises(ApplicationError) as err:
        run(s3.s3_latest_object, S3LatestQuery(bucket="drills", prefix="empty/"))
    assert err.value.type == errors.NOT_FOUND

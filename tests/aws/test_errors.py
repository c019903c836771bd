import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import AwsClients, RdsActivities, aws_errors, classify
from core import errors
from core.aws import RdsInstanceRef
from tests import harness


def _err(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    "code, status, expected",
    [
        ("DBInstanceNotFound", 404, (errors.NOT_FOUND, True)),
        ("TargetGroupNotFound", 400, (errors.NOT_FOUND, True)),
        ("NoSuchHostedZone", 404, (errors.NOT_FOUND, True)),
        ("NoSuchKey", 404, (errors.NOT_FOUND, True)),
        ("Throttling", 400, (errors.TRANSIENT, False)),
        ("PriorRequestNotComplete", 400, (errors.TRANSIENT, False)),
        ("InvalidDBInstanceState", 400, (errors.TRANSIENT, False)),
        ("InternalFailure", 500, (errors.TRANSIENT, False)),
        ("Whatever", 503, (errors.TRANSIENT, False)),
        ("ValidationError", 400, (errors.INVALID_INPUT, True)),
        ("InvalidChangeBatch", 400, (errors.INVALID_INPUT, True)),
        ("AccessDenied", 403, (errors.ACCESS_DENIED, True)),
    ],
)
def test_classify(code, status, expected):
    assert classify(_err(code, status)) == expected


def test_aws_errors_message_names_the_step():
    with pytest.raises(ApplicationError) as err:
        with aws_errors("promoting replica x"):
            raise _err("Throttling")
    assert err.value.message.startswith("promoting replica x: Throttling") and not err.value.non_retryable


def test_unreachable_endpoint_is_transient(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{harness.free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    clients = AwsClients(boto3.Session(region_name="us-east-1"), config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(RdsActivities(clients).rds_describe_instance, RdsInstanceRef(identifier="x", region="us-east-1"))
    assert err.value.type == errors.TRANSIENT and not err.value.non_retryable
    assert "cannot reach AWS" in str(err.value)

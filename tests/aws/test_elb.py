import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws import ElbActivities
from core import errors
from core.aws import AlbSetWeightsInput, AlbSwitchInput, AlbTarget, AlbTargetGroupRef, AlbTargetsInput, AlbTrafficRef


@pytest.fixture
def elb(clients):
    return ElbActivities(clients)


@pytest.fixture
def run():
    return ActivityEnvironment().run


def _canary(demo):
    tgs = demo["target_groups"]
    return AlbTrafficRef(listener_arn=demo["listener_canary_arn"]), tgs["checkout-stable"], tgs["checkout-canary"]


def _listener_actions(clients, listener_arn):
    return clients.client("elbv2").describe_listeners(ListenerArns=[listener_arn])["Listeners"][0]["DefaultActions"]


def test_get_and_set_weights_absolute_and_idempotent(elb, run, demo, clients):
    ref, stable, canary = _canary(demo)
    assert run(elb.alb_get_weights, ref).weights == {stable: 100, canary: 0}

    out = run(elb.alb_set_weights, AlbSetWeightsInput(ref=ref, weights={stable: 90, canary: 10}))
    assert out.weights == {stable: 90, canary: 10}
    assert run(elb.alb_get_weights, ref).weights == {stable: 90, canary: 10}

    # Same absolute weights again: nothing written, same answer (retry/replay safe, not an increment).
    before = _listener_actions(clients, ref.listener_arn)
    again = run(elb.alb_set_weights, AlbSetWeightsInput(ref=ref, weights={stable: 90, canary: 10}))
    assert again.weights == {stable: 90, canary: 10}
    assert _listener_actions(clients, ref.listener_arn) == before


def test_set_weights_keeps_unnamed_groups_at_zero_and_other_settings(elb, run, demo, clients):
    ref, stable, canary = _canary(demo)
    elbv2 = clients.client("elbv2")
    elbv2.modify_listener(
        ListenerArn=ref.listener_arn,
        DefaultActions=[
            {
                "Type": "forward",
                "ForwardConfig": {
                    "TargetGroups": [{"TargetGroupArn": stable, "Weight": 100}, {"TargetGroupArn": canary, "Weight": 0}],
                    "TargetGroupStickinessConfig": {"Enabled": True, "DurationSeconds": 120},
                },
            }
        ],
    )
    out = run(elb.alb_set_weights, AlbSetWeightsInput(ref=ref, weights={canary: 100}))
    assert out.weights == {stable: 0, canary: 100}
    forward = _listener_actions(clients, ref.listener_arn)[0]
    assert forward["ForwardConfig"]["TargetGroupStickinessConfig"] == {"Enabled": True, "DurationSeconds": 120}


@pytest.mark.parametrize(
    "weights, fragment",
    [
        ({"A": 1000, "B": 0}, "outside 0..999"),
        ({"A": -1, "B": 5}, "outside 0..999"),
        ({"A": 0, "B": 0}, "at least one"),
        ({}, "no target group"),
    ],
)
def test_set_weights_validates_aws_limits_before_writing(elb, run, demo, clients, weights, fragment):
    ref, stable, canary = _canary(demo)
    names = {"A": stable, "B": canary}
    before = _listener_actions(clients, ref.listener_arn)
    with pytest.raises(ApplicationError) as err:
        run(elb.alb_set_weights, AlbSetWeightsInput(ref=ref, weights={names[k]: v for k, v in weights.items()}))
    assert err.value.type == errors.INVALID_INPUT and err.value.non_retryable
    assert fragment in str(err.value)
    assert _listener_actions(clients, ref.listener_arn) == before


def test_set_weights_read_back_mismatch_is_verification_failed(elb, run, demo, clients, monkeypatch):
    """A write that does not stick (another actor, an eventually consistent read) must not pass as done."""
    ref, stable, canary = _canary(demo)
    elbv2 = clients.client("elbv2")
    monkeypatch.setattr(elbv2, "modify_listener", lambda **kw: {})  # AWS accepts the call but nothing changes
    with pytest.raises(ApplicationError) as err:
        run(elb.alb_set_weights, AlbSetWeightsInput(ref=ref, weights={stable: 50, canary: 50}))
    assert err.value.type == errors.VERIFICATION_FAILED
    assert "read back" in str(err.value)


def test_weights_on_a_listener_rule(elb, run, demo, clients):
    _, stable, canary = _canary(demo)
    rule = clients.client("elbv2").create_rule(
        ListenerArn=demo["listener_canary_arn"],
        Priority=10,
        Conditions=[{"Field": "path-pattern", "Values": ["/api/*"]}],
        Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": stable, "Weight": 100}]}}],
    )["Rules"][0]["RuleArn"]
    ref = AlbTrafficRef(listener_arn=demo["listener_canary_arn"], rule_arn=rule)
    assert run(elb.alb_get_weights, ref).weights == {stable: 100}
    assert run(elb.alb_set_weights, AlbSetWeightsInput(ref=ref, weights={stable: 75, canary: 25})).weights == {
        stable: 75,
        canary: 25,
    }
    # The listener default action is untouched.
    assert run(elb.alb_get_weights, AlbTrafficRef(listener_arn=demo["listener_canary_arn"])).weights == {
        stable: 100,
        canary: 0,
    }


def test_missing_listener_is_not_found(elb, run, demo):
    bad = demo["listener_canary_arn"].rsplit("/", 1)[0] + "/0123456789abcdef"
    with pytest.raises(ApplicationError) as err:
        run(elb.alb_get_weights, AlbTrafficRef(listener_arn=bad))
    assert err.value.type == errors.NOT_FOUND and err.value.non_retryable


def test_switch_target_group_blue_green(elb, run, demo):
    tgs = demo["target_groups"]
    blue, green = tgs["checkout-blue"], tgs["checkout-green"]
    ref = AlbTrafficRef(listener_arn=demo["listener_bluegreen_arn"])
    out = run(elb.alb_switch_target_group, AlbSwitchInput(ref=ref, target_group_arn=green))
    assert out.changed and out.previous == {blue: 100, green: 0}
    assert run(elb.alb_get_weights, ref).weights == {blue: 0, green: 100}

    again = run(elb.alb_switch_target_group, AlbSwitchInput(ref=ref, target_group_arn=green))
    assert not again.changed and again.previous == {blue: 0, green: 100}

    # Roll back with the previous weights: absolute, exact.
    run(elb.alb_set_weights, AlbSetWeightsInput(ref=ref, weights=out.previous))
    assert run(elb.alb_get_weights, ref).weights == {blue: 100, green: 0}


def test_register_deregister_targets_idempotent(elb, run, demo):
    tg = demo["target_groups"]["checkout-green"]
    targets = [AlbTarget(id="10.42.1.10", port=8080), AlbTarget(id="10.42.1.11", port=8080)]
    first = run(elb.alb_register_targets, AlbTargetsInput(target_group_arn=tg, targets=targets))
    second = run(elb.alb_register_targets, AlbTargetsInput(target_group_arn=tg, targets=targets))
    assert sorted(first.registered) == sorted(second.registered) == ["10.42.1.10", "10.42.1.11"]

    health = run(elb.alb_target_health, AlbTargetGroupRef(target_group_arn=tg))
    assert sorted((t.id, t.port) for t in health.targets) == [("10.42.1.10", 8080), ("10.42.1.11", 8080)]
    assert all(t.state for t in health.targets)

    one = [AlbTarget(id="10.42.1.10", port=8080)]
    out = run(elb.alb_deregister_targets, AlbTargetsInput(target_group_arn=tg, targets=one))
    assert out.registered == ["10.42.1.11"]
    out = run(elb.alb_deregister_targets, AlbTargetsInput(target_group_arn=tg, targets=one))
    assert out.registered == ["10.42.1.11"]

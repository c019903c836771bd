"""Change freeze windows in provision-environment (issue 13 item 2: the calendar is checked before each later change
step): a window that opens while Terraform applies holds the next change (the namespace, then the S3 record) until
the calendar lets it go; lifting the window in the calendar file reaches the waiting run. The real ``check_freeze``
reads a real catalog folder; real Terraform, the Kubernetes fake and moto as in test_workflow.py."""

from __future__ import annotations

import textwrap
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from activities.calendar import CalendarActivities
from tests import harness
from tests.provision.helpers import Hold, activities, make_input, record, start, status_when
from workflows.provision import ProvisionEnvironment


async def test_a_window_opening_during_the_apply_holds_the_namespace_until_it_is_lifted(
    ts_env: WorkflowEnvironment, task_queue: str, recording: Any, kube: Any, aws: str, tf_root: Path, tmp_path: Path
) -> None:
    folder = harness.catalog_with_calendar(tmp_path / "catalog")
    reals = activities(kube, tf_root, recording)
    hold = Hold(reals["terraform_apply"])
    acts = [*{**reals, "terraform_apply": hold.fn}.values(), CalendarActivities(folder).check_freeze]
    async with harness.running_worker(ts_env.client, task_queue, [ProvisionEnvironment], acts):
        handle = await start(ts_env, task_queue, make_input("dev-frz", "development"))
        await hold.started()  # the first change is under way: it was not frozen
        now = (await ts_env.get_current_time()).astimezone(timezone.utc).replace(second=0, microsecond=0)
        (folder / "calendar.yaml").write_text(textwrap.dedent(f"""\
            timezone: UTC
            windows:
              - name: env-freeze
                start: {now - timedelta(hours=1):%Y-%m-%dT%H:%M}
                duration: 1d
                environments: [development]
            """))
        hold.release()
        waiting = await status_when(handle, lambda s: s.status == "WaitingForWindow")
        assert waiting.freeze is not None and waiting.freeze.window == "env-freeze"
        assert waiting.stage.startswith("namespace: waiting for the end of the change freeze 'env-freeze'")
        assert kube.fake.get("namespaces", None, "dev-frz") is None  # held: not created
        assert record("environments/dev-frz.json") is None
        lifted = await ts_env.get_current_time()
        (folder / "calendar.yaml").write_text(harness.NO_WINDOWS)  # the freeze is lifted
        result = await handle.result()
    assert result.status == "Succeeded", result.summary
    assert kube.fake.get("namespaces", None, "dev-frz") is not None and record("environments/dev-frz.json")
    namespace = next(s for s in result.steps if s.name == "namespace")
    assert namespace.finished_at is not None and namespace.finished_at - lifted <= timedelta(minutes=16)  # next look

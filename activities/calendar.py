"""The change calendar, read from the catalog the worker was deployed with (runbooks/calendar.yaml).

``CalendarActivities.check_freeze`` is a local activity a mutating run calls before each change (workflows/base.py
``change``): it reads the catalog afresh each time, so an edited calendar reaches runs already waiting, and judges
the moment the run passes in (its own clock) with core.calendar's ``freeze_at``. A catalog that cannot be read is a
typed, non-retryable failure naming file, line and field: nobody can say whether the change is frozen.
"""

from __future__ import annotations

from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import errors
from core.calendar import FreezeQuery, FreezeState
from core.catalog import Catalog, CatalogError


class CalendarActivities:
    def __init__(self, catalog_dir: Path | str | None) -> None:
        """``catalog_dir``: the catalog folder; None: no calendar (nothing is ever frozen)."""
        self.catalog_dir = Path(catalog_dir) if catalog_dir is not None else None

    @activity.defn
    def check_freeze(self, query: FreezeQuery) -> FreezeState:
        if self.catalog_dir is None:
            return FreezeState()
        try:
            catalog = Catalog.load(self.catalog_dir)
        except CatalogError as err:
            raise ApplicationError(
                f"the change calendar cannot be read, so no change may start: {'; '.join(err.problems[:3])}",
                type=errors.INVALID_INPUT, non_retryable=True,
            ) from None
        return FreezeState(freeze=catalog.freeze(query.runbook, query.environment, query.at, query.kind))

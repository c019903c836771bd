"""The change calendar, read from the catalog the worker was deployed with (runbooks/calendar.yaml).

``CalendarActivities.check_freeze`` is a local activity a mutating run calls before each change (workflows/base.py
``change``): it reads the catalog's files afresh each time, so an edited calendar reaches runs already waiting, and
judges the moment the run passes in (its own clock) with core.calendar's ``freeze_at``. A catalog that cannot be read
is a typed, non-retryable failure naming file, line and field: nobody can say whether the change is frozen.

The files are read every time, but parsed and validated again only when their bytes changed: loading the whole
catalog (every runbook's YAML, with line numbers for its errors) costs about 60 ms of CPU, and a run checks before
every change, a release dozens of times.
"""

from __future__ import annotations

import threading
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import errors
from core.calendar import FreezeQuery, FreezeState
from core.catalog import Catalog, CatalogError

Contents = tuple[tuple[str, bytes], ...]


def _imports(catalog: Catalog | None) -> list[str]:
    return [source.file for source in catalog.calendar.imports] if catalog is not None else []


def catalog_contents(directory: Path, catalog: Catalog | None) -> Contents:
    """The bytes of the files ``Catalog.load(directory)`` reads: its YAML files, and the iCalendar files ``catalog``'s
    calendar imports (the catalog loaded last: its import list is known once calendar.yaml is parsed)."""
    contents = []
    for path in [*sorted(directory.glob("*.y*ml")), *(directory / name for name in _imports(catalog))]:
        try:
            contents.append((str(path), path.read_bytes()))
        except OSError:
            contents.append((str(path), b"\0unreadable"))  # Catalog.load reports it; never equal to read bytes
    return tuple(contents)


class CalendarActivities:
    def __init__(self, catalog_dir: Path | str | None) -> None:
        """``catalog_dir``: the catalog folder; None: no calendar (nothing is ever frozen)."""
        self.catalog_dir = Path(catalog_dir) if catalog_dir is not None else None
        # the catalog loaded last, and the bytes it was loaded from (None: not known, load again)
        self._loaded: tuple[Contents | None, Catalog] | None = None
        self._lock = threading.Lock()  # local activities run in the worker's threads

    def _catalog(self, directory: Path) -> Catalog:
        """The catalog in ``directory``, parsed again only when the bytes of its files changed since the last load.
        The bytes are read before the load, so a file changed meanwhile makes the next call load again; a catalog
        whose calendar imports other files than the last one did is kept without bytes, so the next call reads the
        files it imports and loads again. A catalog that cannot be loaded (CatalogError) is never kept."""
        with self._lock:
            known, previous = self._loaded if self._loaded is not None else (None, None)
            contents = catalog_contents(directory, previous)
            if previous is not None and contents == known:
                return previous
            catalog = Catalog.load(directory)
            self._loaded = (contents if _imports(catalog) == _imports(previous) else None, catalog)
            return catalog

    @activity.defn
    def check_freeze(self, query: FreezeQuery) -> FreezeState:
        if self.catalog_dir is None:
            return FreezeState()
        try:
            catalog = self._catalog(self.catalog_dir)
        except CatalogError as err:
            raise ApplicationError(
                f"the change calendar cannot be read, so no change may start: {'; '.join(err.problems[:3])}",
                type=errors.INVALID_INPUT, non_retryable=True,
            ) from None
        return FreezeState(freeze=catalog.freeze(query.runbook, query.environment, query.at, query.kind))

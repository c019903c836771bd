"""moto's per-request lookups, cached for the suite's moto servers (the session's in tests/conftest.py and the failure
matrix's ledger server in tests/matrix/moto_ledger.py): what they compute does not change while a server runs.

- ``backends.list_of_moto_modules`` lists moto's package directory on every request to find the service (os.listdir
  and a stat per service, ~150 a request): a DescribeDBInstances, client and server, cost ~7.4 ms of CPU, ~5.5 after.
- ``responses.method_names_from_class`` lists the response class's methods (inspect.getmembers, a few hundred) on
  every request to find the action's.
"""

from __future__ import annotations

import functools


def cache_moto_lookups() -> None:
    from moto import backends
    from moto.core import responses

    if hasattr(backends.list_of_moto_modules, "cache_info"):
        return  # cached already (a second server in the process)
    backends.list_of_moto_modules = functools.cache(lambda listed=backends.list_of_moto_modules: tuple(listed()))
    responses.method_names_from_class = functools.cache(
        lambda clazz, names=responses.method_names_from_class: tuple(names(clazz)))

"""Connecting to Temporal the way every Temporal tool does: its environment configuration.

``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS*``, ``TEMPORAL_PROFILE`` and the
config file (``TEMPORAL_CONFIG_FILE``) are read by the SDK's ``temporalio.envconfig``; the same worker and CLI
therefore reach the dev server, a self-hosted cluster or Temporal Cloud. Every client uses the one data converter
of ``workers.codec`` (pydantic, plus payload encryption when codec keys are configured), and OpenTelemetry tracing
when the standard ``OTEL_*`` variables turn it on (``workers.telemetry``).
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from core.config import Settings
from workers.codec import data_converter
from workers.telemetry import tracing_interceptors

DEFAULT_ADDRESS = "localhost:7233"


class TemporalUnreachable(Exception):
    def __init__(self, address: str, cause: BaseException) -> None:
        super().__init__(f"cannot reach Temporal at {address}: {cause}")
        self.address = address


class TemporalConfigError(Exception):
    """The environment configuration cannot be loaded (an unknown profile, a config file that does not parse)."""


def connect_config(settings: Settings) -> dict:
    try:
        config = ClientConfig.load_client_connect_config(profile=settings.temporal_profile)
    except RuntimeError as err:  # the SDK's ConfigError
        raise TemporalConfigError(f"Temporal environment configuration (TEMPORAL_PROFILE, TEMPORAL_CONFIG_FILE): "
                                  f"{err}") from None
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config.setdefault("namespace", "default")
    return dict(config)


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    config = connect_config(settings)
    converter = data_converter(settings)  # keys are read here, before connecting: a key problem says so itself
    try:
        return await Client.connect(**config, data_converter=converter, runtime=runtime,
                                    interceptors=tracing_interceptors())
    except RuntimeError as err:
        raise TemporalUnreachable(config["target_host"], err) from err

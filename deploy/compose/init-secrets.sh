#!/bin/sh
# Creates the secret files docker-compose.yml mounts, in ${SECRETS_DIR:-./secrets}; never overwrites one.
# - generated: the Temporal database password, the Grafana admin password, the codec server's token, a codec key;
# - empty (that integration stays off until you fill the file in): AWS, Vault AppRole, Slack, PagerDuty, kubeconfig.
#   Each file holds the bare value (no quotes, no NAME=); pagerduty_webhook_secrets is a JSON list (["s1"], two
#   during a rotation); kubeconfig is a whole kubeconfig file.
# Compose mounts a secret file as it is on the host, so each file belongs to the user that reads it in its container
# (mode 0600): uid 10001 (this product's image) for all but two; uid 1000 (temporalio/server and temporalio/admin-tools)
# for temporal_db_password, which postgres reads as root before it drops privileges; uid 472 (grafana/grafana) for
# grafana_admin_password. Run it as root (sudo) to set the owners; it sets them on existing files too.
set -eu
dir="${SECRETS_DIR:-./secrets}"
mkdir -p "$dir"
random() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 40; }
new() { [ -e "$dir/$1" ] && return 0; (umask 077; printf '%s' "$2" > "$dir/$1"); echo "created $dir/$1"; }
new temporal_db_password "$(random)"
new grafana_admin_password "$(random)"
new codec_server_token "$(random)"
new codec-keys.json "{\"newest\": \"k1\", \"keys\": {\"k1\": \"$(head -c 32 /dev/urandom | base64)\"}}"
for name in kubeconfig aws_access_key_id aws_secret_access_key vault_role_id vault_secret_id slack_bot_token \
            slack_signing_secret pagerduty_api_token pagerduty_routing_key pagerduty_webhook_secrets; do
  new "$name" ""
done
# the user (uid:gid) whose container reads a file
reader() {
  case "$1" in
    temporal_db_password) echo 1000:1000 ;;
    grafana_admin_password) echo 472:0 ;;
    *) echo 10001:10001 ;;
  esac
}
chmod 600 "$dir"/*
if [ "$(id -u)" -eq 0 ]; then
  for file in "$dir"/*; do chown "$(reader "$(basename "$file")")" "$file"; done
else
  echo "note: run this as root (sudo) so each file belongs to the container user that reads it:"
  for file in "$dir"/*; do echo "  chown $(reader "$(basename "$file")") $file"; done
fi

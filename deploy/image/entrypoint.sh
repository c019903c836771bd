#!/bin/sh
# The image's entrypoint: turns mounted secret files into the environment variables the product and its libraries
# read (boto3, hvac, Slack, PagerDuty all take theirs from the environment), then runs the command.
#
# Every file in $RUNBOOK_SECRETS_DIR (default /run/secrets, where compose `secrets:` land) whose name is a variable
# name (SLACK_SIGNING_SECRET, AWS_SECRET_ACCESS_KEY, ...) becomes that variable, unless it is already set. An empty
# file sets nothing: that integration stays off (the gateway says so when it starts). Other files (a key file, a
# kubeconfig) are left for the variables that point at them (RUNBOOK_CODEC_KEYS_FILE, KUBECONFIG).
# Values never reach the logs or the command line.
set -eu
dir="${RUNBOOK_SECRETS_DIR:-/run/secrets}"
if [ -d "$dir" ]; then
  for file in "$dir"/*; do
    [ -f "$file" ] && [ -s "$file" ] || continue
    name=$(basename "$file")
    case "$name" in
      *[!A-Z0-9_]* | [0-9]*) continue ;;
    esac
    eval "already=\${$name+set}"
    [ -n "$already" ] && continue
    value=$(cat "$file")
    export "$name=$value"
  done
fi
exec "$@"

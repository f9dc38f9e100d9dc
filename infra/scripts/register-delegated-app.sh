#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Register the public-client app that users sign in to for delegated mailboxes (docs/delegated.md):
#   1. an app registration (single tenant) with "Allow public client flows" on and the loopback redirect URI
#      http://localhost ("Mobile and desktop applications"; Entra ignores the port);
#   2. delegated permissions: Graph Mail.Send, Mail.ReadBasic (the Sent Items check), Mail.Send.Shared (shared
#      mailboxes), User.Read, offline_access; Office 365 Exchange Online SMTP.Send.
# No secret and no certificate: the function refreshes the user's sign-in without a credential.
# Users consent for themselves at `outbox login` (where the tenant lets them); a device-code sign-in consents
# to one API only, so an admin may grant consent for both at once in the portal (API permissions > Grant).
# Safe to run again: what exists is left alone.
#
# Who runs it: anyone who may create app registrations (the app team; users may, unless the tenant
# restricts it, then an Application Developer).
#
# Usage:
#   infra/scripts/register-delegated-app.sh [--name outbox-delegated] [--dry-run]
# Prints OUTBOX_DELEGATED_CLIENT_ID=<app id> for the app settings (`azd env set OUTBOX_DELEGATED_CLIENT_ID ...`).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=_common.sh
source "${SCRIPT_DIR}/_common.sh"

APP_NAME="outbox-delegated"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) APP_NAME="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    *) log "unknown argument: $1"; usage 2 ;;
  esac
done

require_az

step "1. App registration '${APP_NAME}' (public client, http://localhost)"
mapfile -t APP_IDS < <(az ad app list --display-name "$APP_NAME" --query "[].appId" -o tsv)
if [[ ${#APP_IDS[@]} -gt 1 ]]; then
  die "${#APP_IDS[@]} app registrations are named '${APP_NAME}': delete the extra ones or pass --name"
fi
if [[ ${#APP_IDS[@]} -eq 1 ]]; then
  APP_ID="${APP_IDS[0]}"
  ok "exists: ${APP_ID}"
else
  APP_ID="$(change az ad app create --display-name "$APP_NAME" --sign-in-audience AzureADMyOrg \
    --is-fallback-public-client true --public-client-redirect-uris "http://localhost" --query appId -o tsv)"
  APP_ID="${APP_ID:-<new app id>}"
  ok "created: ${APP_ID}"
fi
if [[ "$APP_ID" != "<new app id>" ]]; then
  public="$(az ad app show --id "$APP_ID" --query "isFallbackPublicClient" -o tsv)"
  redirects="$(az ad app show --id "$APP_ID" --query "publicClient.redirectUris" -o tsv)"
  if [[ "$public" != "true" ]] || ! grep -qx "http://localhost" <<<"$redirects"; then
    change az ad app update --id "$APP_ID" --is-fallback-public-client true \
      --public-client-redirect-uris "http://localhost" -o none
    ok "public client flows on, redirect URI http://localhost"
  else
    ok "public client flows on, redirect URI http://localhost (already)"
  fi
fi

step "2. Delegated permissions"
declare -A WANTED=(
  ["Mail.Send"]="$GRAPH_APP_ID" ["Mail.ReadBasic"]="$GRAPH_APP_ID" ["Mail.Send.Shared"]="$GRAPH_APP_ID"
  ["User.Read"]="$GRAPH_APP_ID" ["offline_access"]="$GRAPH_APP_ID" ["SMTP.Send"]="$EXCHANGE_APP_ID"
)
for permission in Mail.Send Mail.ReadBasic Mail.Send.Shared User.Read offline_access SMTP.Send; do
  api="${WANTED[$permission]}"
  scope_id="$(delegated_scope_id "$api" "$permission")"
  declared=0
  if [[ "$APP_ID" != "<new app id>" ]]; then
    declared="$(az ad app permission list --id "$APP_ID" \
      --query "[?resourceAppId=='${api}'].resourceAccess[] | [?id=='${scope_id}'] | length(@)" -o tsv 2>/dev/null || echo 0)"
  fi
  if [[ "${declared:-0}" == "0" ]]; then
    change az ad app permission add --id "$APP_ID" --api "$api" --api-permissions "${scope_id}=Scope" -o none
    ok "declared ${permission}"
  else
    ok "${permission} (already)"
  fi
done

printf 'OUTBOX_DELEGATED_CLIENT_ID=%s\n' "$APP_ID"
log "next: azd env set OUTBOX_DELEGATED_CLIENT_ID ${APP_ID}; list the mailboxes in OUTBOX_DELEGATED_MAILBOXES;"
log "      then each mailbox's user runs: outbox login --mailbox <mailbox>"

#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Rotate the sending app's certificate without a failed send:
#   1. make a new version of the Key Vault certificate (same name, new key pair);
#   2. add its public key to the app registration, next to the old one (both are valid now);
#   3. wait until every instance of the function has re-read the certificate
#      (OUTBOX_CERT_REFRESH_S, one hour by default, or restart the app);
#   4. run again with --remove-old: keys other than the current version's come off the app registration.
# Safe to run again: a step that is already done is skipped, and the key of the current version is never removed.
#
# Who runs it: whoever holds Key Vault Certificates Officer on the vault and may update the app registration
# (its owner, or an Application Administrator).
#
# Usage:
#   infra/scripts/rotate-certificate.sh --app-id <client id> [--vault kv-xxx] [--cert-name outbox-sender] [--dry-run]
#   infra/scripts/rotate-certificate.sh --app-id <client id> --remove-old [--dry-run]
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=_common.sh
source "${SCRIPT_DIR}/_common.sh"

APP_ID=""
VAULT=""
CERT_NAME=""
REMOVE_OLD=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --app-id) APP_ID="$2"; shift 2 ;;
    --vault) VAULT="$2"; shift 2 ;;
    --cert-name) CERT_NAME="$2"; shift 2 ;;
    --remove-old) REMOVE_OLD=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    *) log "unknown argument: $1"; usage 2 ;;
  esac
done

APP_ID="${APP_ID:-$(azd_value OUTBOX_CLIENT_ID)}"
VAULT="${VAULT:-$(azd_value AZURE_KEY_VAULT_NAME)}"
CERT_NAME="${CERT_NAME:-$(azd_value OUTBOX_CERT_NAME)}"
CERT_NAME="${CERT_NAME:-outbox-sender}"
[[ -n "$APP_ID" ]] || die "pass --app-id (OUTBOX_CLIENT_ID)"
[[ -n "$VAULT" ]] || die "pass --vault (AZURE_KEY_VAULT_NAME)"

require_az

CURRENT="$(vault_cert_thumbprint "$VAULT" "$CERT_NAME")"
[[ -n "$CURRENT" ]] || die "no certificate '${CERT_NAME}' in '${VAULT}': create it with new-sender-app.sh"

if [[ "$REMOVE_OLD" == "1" ]]; then
  step "Remove keys other than the current version (${CURRENT})"
  # Never leave the app without the key the function is using now.
  app_has_cert "$APP_ID" "$CURRENT" || die "the app does not hold the current certificate ${CURRENT}: run without --remove-old first"
  current_b64="$(hex_to_base64 "$CURRENT")"
  while IFS=$'\t' read -r key_id key_ident; do
    [[ -z "$key_id" ]] && continue
    if [[ "$key_ident" == "$current_b64" || "$(printf '%s' "$key_ident" | tr '[:lower:]' '[:upper:]')" == "$CURRENT" ]]; then
      ok "keeping ${key_id} (current)"
      continue
    fi
    change az ad app credential delete --id "$APP_ID" --key-id "$key_id" --cert
    ok "removed ${key_id}"
  done < <(az ad app credential list --id "$APP_ID" --cert --query "[].[keyId, customKeyIdentifier]" -o tsv)
  exit 0
fi

if app_has_cert "$APP_ID" "$CURRENT"; then
  if [[ "$(az ad app credential list --id "$APP_ID" --cert --query 'length(@)' -o tsv)" -gt 1 ]]; then
    # A rotation is already under way: the current version is on the app next to an older key.
    ok "version ${CURRENT} is already on the app next to an older key: finish with --remove-old"
    exit 0
  fi
  step "New version of '${CERT_NAME}' in '${VAULT}' (current ${CURRENT})"
  POLICY_FILE="$(mktemp)"
  trap 'rm -f "$POLICY_FILE"' EXIT
  az keyvault certificate show --vault-name "$VAULT" --name "$CERT_NAME" --query policy -o json >"$POLICY_FILE"
  change az keyvault certificate create --vault-name "$VAULT" --name "$CERT_NAME" --policy "@${POLICY_FILE}" -o none
  NEW="$(vault_cert_thumbprint "$VAULT" "$CERT_NAME")"
  if [[ "$DRY_RUN" != "1" && "$NEW" == "$CURRENT" ]]; then
    die "Key Vault still returns ${CURRENT} as the current version"
  fi
  ok "new version ${NEW:-<new>}"
else
  # An earlier run made the new version but stopped before step 2: finish it, do not make yet another one.
  step "Version ${CURRENT} exists in the vault but not on the app registration"
fi

step "Add the new public key to the app registration (the old one stays until --remove-old)"
change az ad app credential reset --id "$APP_ID" --keyvault "$VAULT" --cert "$CERT_NAME" --append -o none
ok "added"

REFRESH="$(azd_value OUTBOX_CERT_REFRESH_S)"
step "Done"
log "The function re-reads the certificate every ${REFRESH:-3600} s (OUTBOX_CERT_REFRESH_S) and picks the new version;"
log "restart the function app to switch at once. Then: $0 --app-id ${APP_ID} --remove-old"

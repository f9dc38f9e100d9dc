#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Create the key that seals delegated sign-ins (the MSAL token caches in the sign-ins container), once:
# 32 random bytes, base64, as the Key Vault secret OUTBOX_SIGNIN_KEY_NAME (default outbox-signin-key).
# The function reads it with its Key Vault Certificate User role; `outbox login` reads it to seal what it stores.
# Never rotated by running again: a new key would make every stored sign-in unreadable (users would sign in
# again). Safe to run again: an existing key is left alone.
#
# Who runs it: someone holding Key Vault Secrets Officer (or Administrator) on the vault. No template grants
# that role (it could replace any secret); a subscription owner assigns it to themselves for this one step:
#   az role assignment create --role "Key Vault Secrets Officer" --assignee <you> --scope <vault resource id>
#
# Usage:
#   infra/scripts/create-signin-key.sh [--vault kv-xxx] [--name outbox-signin-key] [--dry-run]
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=_common.sh
source "${SCRIPT_DIR}/_common.sh"

VAULT=""
NAME=""

while [[ $# -gt 0 ]]; do
  case "$1" in
    --vault) VAULT="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    *) log "unknown argument: $1"; usage 2 ;;
  esac
done

VAULT="${VAULT:-$(azd_value AZURE_KEY_VAULT_NAME)}"
NAME="${NAME:-$(azd_value OUTBOX_SIGNIN_KEY_NAME)}"
NAME="${NAME:-outbox-signin-key}"
[[ -n "$VAULT" ]] || die "no Key Vault: pass --vault (azd env value AZURE_KEY_VAULT_NAME after 'azd provision')"

require_az

step "Sign-in key '${NAME}' in ${VAULT}"
if az keyvault secret show --vault-name "$VAULT" --name "$NAME" --query id -o tsv >/dev/null 2>&1; then
  ok "exists (left alone: a new key would make every stored sign-in unreadable)"
  exit 0
fi
command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the key"
# The value goes through a file, never the command line (which other users of the machine can read).
KEY_FILE="$(mktemp)"
trap 'rm -f "$KEY_FILE"' EXIT
openssl rand -base64 32 | tr -d '\n' >"$KEY_FILE"
change az keyvault secret set --vault-name "$VAULT" --name "$NAME" --file "$KEY_FILE" -o none
ok "created (32 random bytes, base64)"

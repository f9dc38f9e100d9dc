# Helpers shared by the Azure CLI scripts in this folder. Sourced, never run on its own.
# shellcheck shell=bash

# Well-known application ids of the resource APIs whose permissions outbox asks for.
readonly GRAPH_APP_ID="00000003-0000-0000-c000-000000000000"        # Microsoft Graph
readonly EXCHANGE_APP_ID="00000002-0000-0ff1-ce00-000000000000"     # Office 365 Exchange Online

DRY_RUN="${DRY_RUN:-0}"

log() { printf '%s\n' "$*" >&2; }
step() { printf '\n== %s\n' "$*" >&2; }
ok() { printf '   ok: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# Each script's header comment (line 3 down to `set -euo`) is its help text.
usage() { sed -n '3,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

# A command that changes the tenant or the vault. Read-only queries are run directly, even in a dry run,
# so that a dry run shows exactly which changes a real run would make.
change() {
  if [[ "$DRY_RUN" == "1" ]]; then
    printf '   [dry-run] would run:' >&2
    printf ' %q' "$@" >&2
    printf '\n' >&2
    return 0
  fi
  "$@"
}

require_az() {
  command -v az >/dev/null 2>&1 || die "Azure CLI (az) not found: https://aka.ms/azure-cli"
  az account show --query id -o tsv >/dev/null 2>&1 || die "not signed in: run 'az login' (tenant of the sending app)"
}

# Value of an azd environment variable, or empty when azd or the variable is missing.
azd_value() {
  if command -v azd >/dev/null 2>&1; then
    azd env get-value "$1" 2>/dev/null || true
  fi
}

# The Microsoft Graph endpoint of the cloud az is signed in to (public, US Gov, China).
graph_endpoint() {
  local endpoint
  endpoint="$(az cloud show --query endpoints.microsoftGraphResourceId -o tsv)"
  printf '%s' "${endpoint%/}"
}

# The application (not delegated) permission id called $2 on the API whose app id is $1.
app_role_id() {
  local api_app_id="$1" value="$2" role_id
  role_id="$(az ad sp show --id "$api_app_id" --query "appRoles[?value=='${value}' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv)"
  [[ -n "$role_id" ]] || die "no application permission '${value}' on API ${api_app_id}"
  printf '%s' "$role_id"
}

# The API a permission belongs to: SMTP.SendAsApp is Exchange Online's, the Mail.* ones are Graph's.
api_of_permission() {
  case "$1" in
    SMTP.SendAsApp) printf '%s' "$EXCHANGE_APP_ID" ;;
    Mail.Send|Mail.ReadBasic|Mail.ReadWrite) printf '%s' "$GRAPH_APP_ID" ;;
    *) die "unknown permission '$1' (expected Mail.Send, Mail.ReadBasic, Mail.ReadWrite or SMTP.SendAsApp)" ;;
  esac
}

# Key Vault certificate policy: self-signed RSA 2048, exportable (the function reads the private key through
# the secrets API as PKCS#12), 12 months, and an e-mail to the vault's contacts 30 days before expiry.
# No auto-renew: a renewed certificate is useless until its public key is on the app registration,
# which rotate-certificate.sh does in the right order.
cert_policy() {
  local subject="$1"
  cat <<EOF
{
  "issuerParameters": {"name": "Self"},
  "keyProperties": {"exportable": true, "keyType": "RSA", "keySize": 2048, "reuseKey": false},
  "secretProperties": {"contentType": "application/x-pkcs12"},
  "x509CertificateProperties": {
    "subject": "CN=${subject}",
    "keyUsage": ["digitalSignature"],
    "validityInMonths": 12
  },
  "lifetimeActions": [
    {"trigger": {"daysBeforeExpiry": 30}, "action": {"actionType": "EmailContacts"}}
  ]
}
EOF
}

# Thumbprint (SHA-1, upper-case hex) of the current version of a Key Vault certificate; empty if none.
vault_cert_thumbprint() {
  local vault="$1" name="$2"
  az keyvault certificate show --vault-name "$vault" --name "$name" --query x509ThumbprintHex -o tsv 2>/dev/null \
    | tr '[:lower:]' '[:upper:]' || true
}

# Base64 of the bytes a hex string spells (Graph returns a certificate's thumbprint this way).
hex_to_base64() {
  printf '%b' "$(printf '%s' "$1" | sed 's/../\\x&/g')" | base64
}

# Whether the app registration $1 holds the certificate whose SHA-1 thumbprint is $2 (hex).
# customKeyIdentifier is the thumbprint: base64 bytes from Graph, hex from older tools; both are accepted.
app_has_cert() {
  local app_id="$1" thumb_hex thumb_b64 id
  thumb_hex="$(printf '%s' "$2" | tr '[:lower:]' '[:upper:]')"
  thumb_b64="$(hex_to_base64 "$thumb_hex")"
  while IFS= read -r id; do
    [[ "$id" == "$thumb_b64" || "$(printf '%s' "$id" | tr '[:lower:]' '[:upper:]')" == "$thumb_hex" ]] && return 0
  done < <(az ad app credential list --id "$app_id" --cert --query "[].customKeyIdentifier" -o tsv)
  return 1
}

# The id of a delegated permission (an oauth2PermissionScope) of an API, by its value (e.g. Mail.Send).
delegated_scope_id() {
  local api_app_id="$1" value="$2" scope_id
  scope_id="$(az ad sp show --id "$api_app_id" --query "oauth2PermissionScopes[?value=='${value}'].id | [0]" -o tsv)"
  [[ -n "$scope_id" ]] || die "no delegated permission '${value}' on API ${api_app_id}"
  printf '%s' "$scope_id"
}

#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Create (or find) the Entra app registration outbox sends as, give it a certificate kept in Key Vault,
# and declare the application permissions it will need. Safe to run again: every step looks before it acts.
#
# Who runs it: the app team, after `azd provision` (it needs the vault). Needs: Azure CLI signed in to the
# tenant of the mailboxes (`az login --tenant ...`), permission to create app registrations (Application
# Developer or the tenant default), and Key Vault Certificates Officer on the vault (azd grants it to the
# person who ran `azd up`).
#
# Seed checklist, "App / Dev Team": "Create an app registration", "Store Tenant ID, Client ID, and any
# secret/certificate securely", "App-only: use MSAL client credentials". Admin consent and mailbox
# scoping are the email team's steps: grant-admin-consent.sh, then scope-mailboxes.ps1.
#
# Usage:
#   infra/scripts/new-sender-app.sh [--name outbox-sender] [--vault kv-xxx] [--cert-name outbox-sender]
#                                   [--transport graph|smtp|both] [--graph-scoping rbac|policy]
#                                   [--lookup] [--large-attachments] [--dry-run]
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=_common.sh
source "${SCRIPT_DIR}/_common.sh"

APP_NAME="outbox-sender"
VAULT=""
CERT_NAME=""
TRANSPORT="graph"
GRAPH_SCOPING="rbac"
WANT_LOOKUP=0
WANT_LARGE=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) APP_NAME="$2"; shift 2 ;;
    --vault) VAULT="$2"; shift 2 ;;
    --cert-name) CERT_NAME="$2"; shift 2 ;;
    --transport) TRANSPORT="$2"; shift 2 ;;
    --graph-scoping) GRAPH_SCOPING="$2"; shift 2 ;;
    --lookup) WANT_LOOKUP=1; shift ;;
    --large-attachments) WANT_LARGE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    *) log "unknown argument: $1"; usage 2 ;;
  esac
done

# Defaults come from the azd environment that `azd up` filled (outputs of infra/main.bicep).
VAULT="${VAULT:-$(azd_value AZURE_KEY_VAULT_NAME)}"
CERT_NAME="${CERT_NAME:-$(azd_value OUTBOX_CERT_NAME)}"
CERT_NAME="${CERT_NAME:-outbox-sender}"
[[ -n "$VAULT" ]] || die "no Key Vault: pass --vault (azd env value AZURE_KEY_VAULT_NAME after 'azd provision')"
case "$TRANSPORT" in graph|smtp|both) ;; *) die "--transport must be graph, smtp or both" ;; esac
case "$GRAPH_SCOPING" in rbac|policy) ;; *) die "--graph-scoping must be rbac or policy" ;; esac

require_az
TENANT_ID="$(az account show --query tenantId -o tsv)"

# The permissions this app declares. With RBAC for Applications the Graph permissions are granted in
# Exchange, scoped to mailboxes, and must NOT also be declared and consented in Entra: an Entra grant is
# tenant-wide and the two add up.
PERMISSIONS=()
if [[ "$TRANSPORT" != "smtp" && "$GRAPH_SCOPING" == "policy" ]]; then
  PERMISSIONS+=("Mail.Send")
  [[ "$WANT_LOOKUP" == "1" ]] && PERMISSIONS+=("Mail.ReadBasic")
  [[ "$WANT_LARGE" == "1" ]] && PERMISSIONS+=("Mail.ReadWrite")
fi
[[ "$TRANSPORT" != "graph" ]] && PERMISSIONS+=("SMTP.SendAsApp")

# --- 1. App registration (single tenant) ------------------------------------------------------------------
step "App registration '${APP_NAME}'"
mapfile -t APP_IDS < <(az ad app list --display-name "$APP_NAME" --query "[].appId" -o tsv)
if [[ ${#APP_IDS[@]} -gt 1 ]]; then
  die "${#APP_IDS[@]} app registrations are named '${APP_NAME}': pass a unique --name"
elif [[ ${#APP_IDS[@]} -eq 1 ]]; then
  APP_ID="${APP_IDS[0]}"
  ok "exists: client id ${APP_ID}"
else
  APP_ID="$(change az ad app create --display-name "$APP_NAME" --sign-in-audience AzureADMyOrg --query appId -o tsv)"
  APP_ID="${APP_ID:-<new-app-id>}"
  ok "created: client id ${APP_ID}"
fi

# --- 2. Service principal (the "Enterprise Application"; Exchange's New-ServicePrincipal needs its object id)
step "Enterprise application (service principal)"
SP_OBJECT_ID="$(az ad sp show --id "$APP_ID" --query id -o tsv 2>/dev/null || true)"
if [[ -n "$SP_OBJECT_ID" ]]; then
  ok "exists: object id ${SP_OBJECT_ID}"
else
  SP_OBJECT_ID="$(change az ad sp create --id "$APP_ID" --query id -o tsv)"
  SP_OBJECT_ID="${SP_OBJECT_ID:-<new-sp-object-id>}"
  ok "created: object id ${SP_OBJECT_ID}"
fi

# --- 3. Certificate in Key Vault (the private key never leaves the vault except to the function) -----------
step "Key Vault certificate '${CERT_NAME}' in '${VAULT}'"
THUMBPRINT="$(vault_cert_thumbprint "$VAULT" "$CERT_NAME")"
if [[ -n "$THUMBPRINT" ]]; then
  ok "exists: thumbprint ${THUMBPRINT}"
else
  POLICY_FILE="$(mktemp)"
  trap 'rm -f "$POLICY_FILE"' EXIT
  cert_policy "$APP_NAME" >"$POLICY_FILE"
  change az keyvault certificate create --vault-name "$VAULT" --name "$CERT_NAME" --policy "@${POLICY_FILE}" -o none
  THUMBPRINT="$(vault_cert_thumbprint "$VAULT" "$CERT_NAME")"
  [[ -n "$THUMBPRINT" || "$DRY_RUN" == "1" ]] || die "certificate '${CERT_NAME}' was not created"
  ok "created: thumbprint ${THUMBPRINT:-<new>}"
fi

# --- 4. Public key on the app registration (--append keeps any other key, e.g. during a rotation) ----------
step "Certificate on the app registration"
if [[ -n "$THUMBPRINT" ]] && [[ "$APP_ID" != "<new-app-id>" ]] && app_has_cert "$APP_ID" "$THUMBPRINT"; then
  ok "the app already trusts thumbprint ${THUMBPRINT}"
else
  change az ad app credential reset --id "$APP_ID" --keyvault "$VAULT" --cert "$CERT_NAME" --append -o none
  ok "public key of '${CERT_NAME}' added"
fi

# --- 5. Declared application permissions (granting them is grant-admin-consent.sh) -------------------------
step "Declared permissions: ${PERMISSIONS[*]:-none (Graph is scoped with RBAC for Applications in Exchange)}"
for permission in "${PERMISSIONS[@]}"; do
  api="$(api_of_permission "$permission")"
  role_id="$(app_role_id "$api" "$permission")"
  declared="$(az ad app permission list --id "$APP_ID" \
    --query "[?resourceAppId=='${api}'].resourceAccess[] | [?id=='${role_id}'] | length(@)" -o tsv 2>/dev/null || echo 0)"
  if [[ "${declared:-0}" -gt 0 ]]; then
    ok "${permission} already declared"
  else
    change az ad app permission add --id "$APP_ID" --api "$api" --api-permissions "${role_id}=Role" -o none
    ok "${permission} declared"
  fi
done

# --- Result: what the function and the email team need ---------------------------------------------------
step "Done"
cat <<EOF
OUTBOX_TENANT_ID=${TENANT_ID}
OUTBOX_CLIENT_ID=${APP_ID}
ENTERPRISE_APP_OBJECT_ID=${SP_OBJECT_ID}
CERT_THUMBPRINT=${THUMBPRINT}

Next:
  azd env set OUTBOX_TENANT_ID ${TENANT_ID}
  azd env set OUTBOX_CLIENT_ID ${APP_ID}
  azd provision                      # puts both into the function's settings
Email team (tenant admin), with the ids above:
  infra/scripts/grant-admin-consent.sh --app-id ${APP_ID} --permissions $(IFS=,; echo "${PERMISSIONS[*]:-none}")
  pwsh infra/scripts/scope-mailboxes.ps1 -AppId ${APP_ID} -ServicePrincipalObjectId ${SP_OBJECT_ID} -Mailboxes <sender@contoso.com> -Transport ${TRANSPORT^} -GraphScoping $([[ $GRAPH_SCOPING == rbac ]] && echo Rbac || echo AccessPolicy)
EOF

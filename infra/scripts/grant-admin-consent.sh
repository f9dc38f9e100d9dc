#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Grant tenant-admin consent for outbox's application permissions, one app role assignment per permission,
# then read the assignments back. Safe to run again: an existing grant is left alone.
#
# Who runs it: the email team, as a tenant admin who may grant application permissions (Privileged Role
# Administrator or Global Administrator). Needs: Azure CLI signed in to the tenant of the mailboxes.
#
# Seed checklist, "Infrastructure Team": "Verify admin consent where required (application permissions)";
# "App-only (SMTP): add Application permission Office 365 Exchange Online -> SMTP.SendAsApp; grant Admin
# consent"; "App-only (Graph): add Application permission Microsoft Graph > Mail.Send; grant Admin consent".
#
# With RBAC for Applications (scope-mailboxes.ps1 -GraphScoping Rbac, the default), Graph's Mail.* permissions
# are granted in Exchange and scoped to the named mailboxes; consenting them here as well would give the app
# every mailbox of the tenant, because the two grants add up. So Mail.* needs --graph-scoping policy.
#
# Usage:
#   infra/scripts/grant-admin-consent.sh --app-id <client id> --permissions SMTP.SendAsApp
#   infra/scripts/grant-admin-consent.sh --app-id <client id> --permissions Mail.Send,Mail.ReadBasic --graph-scoping policy
#   add --dry-run to see what would change, --verify-only to only check
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=_common.sh
source "${SCRIPT_DIR}/_common.sh"

APP_ID=""
PERMISSION_LIST=""
GRAPH_SCOPING="rbac"
VERIFY_ONLY=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --app-id) APP_ID="$2"; shift 2 ;;
    --permissions) PERMISSION_LIST="$2"; shift 2 ;;
    --graph-scoping) GRAPH_SCOPING="$2"; shift 2 ;;
    --verify-only) VERIFY_ONLY=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    *) log "unknown argument: $1"; usage 2 ;;
  esac
done

APP_ID="${APP_ID:-$(azd_value OUTBOX_CLIENT_ID)}"
[[ -n "$APP_ID" ]] || die "pass --app-id (the client id new-sender-app.sh printed)"
[[ -n "$PERMISSION_LIST" && "$PERMISSION_LIST" != "none" ]] || die "pass --permissions, e.g. SMTP.SendAsApp or Mail.Send"
case "$GRAPH_SCOPING" in rbac|policy) ;; *) die "--graph-scoping must be rbac or policy" ;; esac

IFS=',' read -r -a PERMISSIONS <<<"$PERMISSION_LIST"
for permission in "${PERMISSIONS[@]}"; do
  api="$(api_of_permission "$permission")"
  if [[ "$api" == "$GRAPH_APP_ID" && "$GRAPH_SCOPING" == "rbac" ]]; then
    die "${permission} is granted in Exchange with RBAC for Applications (scope-mailboxes.ps1); an Entra consent would be tenant-wide. Use --graph-scoping policy only with an Application Access Policy."
  fi
done

require_az
GRAPH="$(graph_endpoint)"

step "Enterprise application of ${APP_ID}"
SP_OBJECT_ID="$(az ad sp show --id "$APP_ID" --query id -o tsv 2>/dev/null || true)"
[[ -n "$SP_OBJECT_ID" ]] || die "no service principal for ${APP_ID}: run new-sender-app.sh first"
ok "object id ${SP_OBJECT_ID}"

FAILED=0
for permission in "${PERMISSIONS[@]}"; do
  step "Consent: ${permission}"
  api="$(api_of_permission "$permission")"
  resource_id="$(az ad sp show --id "$api" --query id -o tsv)"
  role_id="$(app_role_id "$api" "$permission")"

  # The grant itself: an app role assignment from the API's service principal to ours.
  granted="$(az rest --method GET \
    --url "${GRAPH}/v1.0/servicePrincipals/${SP_OBJECT_ID}/appRoleAssignments" \
    --query "value[?resourceId=='${resource_id}' && appRoleId=='${role_id}'] | length(@)" -o tsv)"
  if [[ "${granted:-0}" -gt 0 ]]; then
    ok "already granted"
    continue
  fi
  if [[ "$VERIFY_ONLY" == "1" ]]; then
    log "   MISSING: ${permission} is not consented"
    FAILED=1
    continue
  fi
  change az rest --method POST \
    --url "${GRAPH}/v1.0/servicePrincipals/${SP_OBJECT_ID}/appRoleAssignments" \
    --headers "Content-Type=application/json" \
    --body "{\"principalId\":\"${SP_OBJECT_ID}\",\"resourceId\":\"${resource_id}\",\"appRoleId\":\"${role_id}\"}" \
    -o none

  # Verify: read the grant back (a dry run changed nothing, so there is nothing to read).
  if [[ "$DRY_RUN" != "1" ]]; then
    granted="$(az rest --method GET \
      --url "${GRAPH}/v1.0/servicePrincipals/${SP_OBJECT_ID}/appRoleAssignments" \
      --query "value[?resourceId=='${resource_id}' && appRoleId=='${role_id}'] | length(@)" -o tsv)"
    if [[ "${granted:-0}" -gt 0 ]]; then ok "granted"; else log "   FAILED: ${permission} not visible after the grant"; FAILED=1; fi
  fi
done

step "Done"
if [[ "$FAILED" == "1" ]]; then
  die "some permissions are not consented (see above)"
fi
log "Tokens issued from now on carry these roles (the 'roles' claim); a token cached by the function keeps its old"
log "roles until it expires (up to ~90 minutes), and 'outbox doctor' shows the claims of a fresh one."

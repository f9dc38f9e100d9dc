// outbox: queue-triggered mail sender on Azure Functions Flex Consumption.
// `azd up` deploys this at subscription scope: one resource group holding storage (queues, status table,
// attachment and deployment containers), Key Vault, monitoring, the function app and its least-privilege roles.
// Modules are plain `resource` declarations (no registry modules) so the templates can be parsed and scanned offline.
targetScope = 'subscription'

// ----------------------------------------------------------------------------------------------------------------
// azd
// ----------------------------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds the resource token and names the resource group.')
param environmentName string

@minLength(1)
@description('Region of every resource; it must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of whoever runs azd (AZURE_PRINCIPAL_ID). It may create and rotate the sender certificate, and read, requeue and purge poison (outbox poison ...). Empty grants nothing.')
param principalId string = ''

@description('Kind of principal behind principalId: a person, or a pipeline service principal.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

// ----------------------------------------------------------------------------------------------------------------
// Who may use the queue (least privilege: each gets one role on one resource)
// ----------------------------------------------------------------------------------------------------------------

@description('Comma-separated object ids of producer identities (managed identities or service principals). Each gets Storage Queue Data Message Sender on the outbox queue and nothing else.')
param producerPrincipalIds string = ''

@description('Comma-separated object ids of producers that upload large attachments as blob references. Each gets Storage Blob Data Contributor on the attachment container only.')
param attachmentWriterPrincipalIds string = ''

// ----------------------------------------------------------------------------------------------------------------
// Sizing and operations
// ----------------------------------------------------------------------------------------------------------------

@description('Upper bound of Flex Consumption instances. Microsoft limits each mailbox per app across all instances (4 concurrent Graph requests, 3 SMTP connections), so more instances only help when many mailboxes send at once.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 4

@description('Memory of each instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Python version of the function app.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Replication of the storage account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_ZRS'

@description('Days after which blobs in the attachment container (claim checks and oversized poison originals) are deleted; 0 keeps them.')
@minValue(0)
param attachmentRetentionDays int = 30

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('Email address told when poison messages appear. Empty: the alert fires in Azure Monitor without notifying anyone.')
param alertEmailAddress string = ''

// ----------------------------------------------------------------------------------------------------------------
// outbox settings: one parameter per setting the function reads (shared/settings.py SETTINGS, scope "function").
// Defaults equal the code's defaults; tests/infra check both the names and the defaults so they cannot drift.
// ----------------------------------------------------------------------------------------------------------------

@description('OUTBOX_QUEUE: queue the trigger reads; poison goes to <queue>-poison.')
@minLength(3)
@maxLength(56)
param outboxQueue string = 'outbox'

@description('OUTBOX_STATUS_TABLE: table holding one status row per message id.')
@minLength(3)
@maxLength(63)
param outboxStatusTable string = 'outboxstatus'

@description('OUTBOX_ATTACHMENTS_CONTAINER: blob container for attachment claim checks and oversized poison originals.')
@minLength(3)
@maxLength(63)
param outboxAttachmentsContainer string = 'outbox-attachments'

@description('OUTBOX_ATTACHMENT_CONTAINERS: comma list of further containers producers may name in an attachment blob (never the host containers).')
param outboxAttachmentContainers string = ''

@description('OUTBOX_TENANT_ID: Entra tenant of the sending app registration. Empty: the tenant of this subscription.')
param outboxTenantId string = ''

@description('OUTBOX_CLIENT_ID: client id of the app registration that sends mail (infra/scripts/new-sender-app.sh prints it). Empty until the app exists: the function then reports it as missing.')
param outboxClientId string = ''

@description('OUTBOX_CERT_NAME: name of the Key Vault certificate of the sending app.')
param outboxCertName string = 'outbox-sender'

@description('OUTBOX_TRANSPORT: default transport when a message names none.')
@allowed([
  'graph'
  'smtp'
])
param outboxTransport string = 'graph'

@description('OUTBOX_ALLOWED_SENDERS: comma list of sender addresses or *@domain; empty allows nobody.')
param outboxAllowedSenders string = ''

@description('OUTBOX_ON_AMBIGUOUS: what to do when a send may have happened.')
@allowed([
  'lookup'
  'resend'
  'poison'
])
param outboxOnAmbiguous string = 'lookup'

@description('OUTBOX_SMTP_SENT_COPY: after an SMTP send, never, always or auto (save a Sent Items copy through Graph when Exchange kept none; needs Mail.ReadWrite).')
@allowed([
  'never'
  'always'
  'auto'
])
param outboxSmtpSentCopy string = 'never'

@description('OUTBOX_MAX_ATTEMPTS: attempts before a retryable failure is poisoned.')
param outboxMaxAttempts string = '8'

@description('OUTBOX_BACKOFF_BASE_S: first retry delay in seconds.')
param outboxBackoffBaseS string = '5'

@description('OUTBOX_BACKOFF_MAX_S: longest retry delay in seconds.')
param outboxBackoffMaxS string = '900'

@description('OUTBOX_RETRY_AFTER_MAX_S: cap on a server Retry-After, in seconds.')
param outboxRetryAfterMaxS string = '900'

@description('OUTBOX_CLOUD: Microsoft 365 cloud, which picks hosts and token scopes.')
@allowed([
  'public'
  'usgov'
  'usgovdod'
  'china'
])
param outboxCloud string = 'public'

@description('OUTBOX_AUTHORITY_HOST: override of the Entra authority host; empty follows OUTBOX_CLOUD.')
param outboxAuthorityHost string = ''

@description('OUTBOX_GRAPH_URL: override of the Graph base URL; empty follows OUTBOX_CLOUD.')
param outboxGraphUrl string = ''

@description('OUTBOX_SMTP_HOST: override of the SMTP submission host; empty follows OUTBOX_CLOUD.')
param outboxSmtpHost string = ''

@description('OUTBOX_SMTP_PORT: SMTP submission port (STARTTLS is always required).')
param outboxSmtpPort string = '587'

@description('OUTBOX_CA_BUNDLE: PEM file of CA certificates for outbound TLS; empty uses the system roots (right for Azure).')
param outboxCaBundle string = ''

@description('OUTBOX_HTTP_TIMEOUT_S: read/write timeout of Graph requests, in seconds.')
param outboxHttpTimeoutS string = '30'

@description('OUTBOX_SMTP_TIMEOUT_S: socket timeout of SMTP commands, in seconds.')
param outboxSmtpTimeoutS string = '30'

@description('OUTBOX_GRAPH_CONCURRENCY: Graph requests in flight per mailbox (Outlook allows 4), across all instances with OUTBOX_SLOTS=blob.')
param outboxGraphConcurrency string = '4'

@description('OUTBOX_SMTP_CONNECTIONS: SMTP connections per mailbox (Exchange allows 3), across all instances with OUTBOX_SLOTS=blob.')
param outboxSmtpConnections string = '3'

@description('OUTBOX_SLOTS: blob shares the per-mailbox slots between instances through blob leases; local counts them per instance.')
@allowed([
  'blob'
  'local'
])
param outboxSlots string = 'blob'

@description('OUTBOX_SLOTS_CONTAINER: blob container holding one blob per mailbox slot (created here, granted to the function only).')
param outboxSlotsContainer string = 'outbox-slots'

@description('OUTBOX_SLOT_LEASE_S: lease period of a slot blob, 15-60 s; a crashed instance frees its slots this long after it stopped.')
param outboxSlotLeaseS string = '15'

@description('OUTBOX_SLOT_IDLE_S: a slot lease unused this long is given back for other instances, in seconds.')
param outboxSlotIdleS string = '0.25'

@description('OUTBOX_SLOT_IDLE_ALONE_S: as OUTBOX_SLOT_IDLE_S, on a mailbox where this instance has seen no other holder lately; also the longest gap between two looks by a holder for waiting instances, in seconds.')
param outboxSlotIdleAloneS string = '2'

@description('OUTBOX_SLOT_PROBE_S: how often an instance that wants a slot held elsewhere looks for a free one (and a holder of several for waiting instances), in seconds.')
param outboxSlotProbeS string = '0.25'

@description('OUTBOX_SLOT_TIMEOUT_S: a slot-store request slower than this counts as a store failure, in seconds.')
param outboxSlotTimeoutS string = '2'

@description('OUTBOX_EXPECTED_INSTANCES: instances that may send at once (2 scale groups x maximumInstanceCount + always ready); each takes floor(slots / this) while the slot store fails.')
param outboxExpectedInstances string = '8'

@description('OUTBOX_GRAPH_BUDGET_REQUESTS: Graph requests per mailbox per budget window.')
param outboxGraphBudgetRequests string = '10000'

@description('OUTBOX_GRAPH_BUDGET_WINDOW_S: length of the Graph request budget window, in seconds.')
param outboxGraphBudgetWindowS string = '600'

@description('OUTBOX_SMTP_RATE_PER_WINDOW: SMTP messages per mailbox per rate window.')
param outboxSmtpRatePerWindow string = '30'

@description('OUTBOX_SMTP_RATE_WINDOW_S: length of the SMTP rate window, in seconds.')
param outboxSmtpRateWindowS string = '60'

@description('OUTBOX_PACING_MAX_WAIT_S: longest in-process wait for a mailbox slot before re-queueing.')
param outboxPacingMaxWaitS string = '2'

@description('OUTBOX_CERT_REFRESH_S: how often the certificate is re-read from Key Vault, in seconds.')
param outboxCertRefreshS string = '3600'

@description('OUTBOX_CERT_EXPIRY_MARGIN_S: re-read the certificate when it expires within this many seconds.')
param outboxCertExpiryMarginS string = '604800'

@description('OUTBOX_SMTP_IDLE_S: idle SMTP sessions are closed after this many seconds.')
param outboxSmtpIdleS string = '60'

@description('OUTBOX_DELEGATED_CLIENT_ID: client id of the public-client app users sign in to for delegated mailboxes (infra/scripts/register-delegated-app.sh); empty: app-only only.')
param outboxDelegatedClientId string = ''

@description('OUTBOX_DELEGATED_MAILBOXES: comma list of mailbox[=account] that send as a signed-in user (outbox login); the rest send app-only.')
param outboxDelegatedMailboxes string = ''

@description('OUTBOX_SIGNIN_CONTAINER: blob container of the delegated sign-ins (encrypted MSAL token caches); only the function and the operator may use it.')
param outboxSigninContainer string = 'outbox-signins'

@description('OUTBOX_SIGNIN_KEY_NAME: Key Vault secret holding the key the sign-ins are sealed with (created once by infra/scripts/create-signin-key.sh).')
param outboxSigninKeyName string = 'outbox-signin-key'

@description('OUTBOX_SIGNIN_RECHECK_S: a mailbox whose sign-in is dead re-reads its stored sign-in at most this often, in seconds.')
param outboxSigninRecheckS string = '60'

@description('OUTBOX_KEEPALIVE_SCHEDULE: NCRONTAB schedule of the timer that refreshes every stored sign-in (daily; Entra drops a refresh token unused for 90 days).')
param outboxKeepaliveSchedule string = '0 17 3 * * *'

@description('OUTBOX_LEASE_S: how long a status-row claim protects a message being sent, in seconds.')
param outboxLeaseS string = '300'

@description('OUTBOX_LARGE_ATTACHMENT_BYTES: attachments this large go through a Graph upload session.')
param outboxLargeAttachmentBytes string = '3145728'

@description('OUTBOX_MAX_SEND_BYTES: the sending mailboxes\' MaxSendSize (default 35 MB, Exchange Online\'s default); larger Graph messages are poisoned as size before any request; 0 = not known.')
param outboxMaxSendBytes string = '36700160'

@description('OUTBOX_UPLOAD_CHUNK_BYTES: byte range per upload-session PUT (under 4 MiB).')
param outboxUploadChunkBytes string = '3145728'

@description('OUTBOX_API_DEADLINE_S: longest an HTTP function works before it answers 503 with Retry-After.')
param outboxApiDeadlineS string = '8'

@description('OUTBOX_LOOKUP_SETTLE_S: after a send that may have been delivered, the first Sent Items lookup waits this long, in seconds.')
param outboxLookupSettleS string = '120'

@description('OUTBOX_MAX_AGE_S: a throttled message (which spends no attempt) is poisoned once it is this old, in seconds.')
param outboxMaxAgeS string = '86400'

@description('OUTBOX_STORAGE_TIMEOUT_S: connect and read timeout of each storage request, in seconds.')
param outboxStorageTimeoutS string = '10'

// ----------------------------------------------------------------------------------------------------------------
// Names
// ----------------------------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
// Flex Consumption reads the package from this container with the function's identity.
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'
var poisonQueueName = '${outboxQueue}-poison'
// The Functions host keeps its locks and function keys here; granted container by container, not account-wide.
var hostContainerNames = [
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]

// The app settings of the outbox contract, by the names shared/settings.py reads.
var outboxSettings = {
  OUTBOX_QUEUE: outboxQueue
  OUTBOX_STATUS_TABLE: outboxStatusTable
  OUTBOX_ATTACHMENTS_CONTAINER: outboxAttachmentsContainer
  OUTBOX_ATTACHMENT_CONTAINERS: outboxAttachmentContainers
  OUTBOX_TENANT_ID: empty(outboxTenantId) ? tenant().tenantId : outboxTenantId
  OUTBOX_CLIENT_ID: outboxClientId
  OUTBOX_KEYVAULT_URL: keyVault.outputs.uri
  OUTBOX_CERT_NAME: outboxCertName
  OUTBOX_TRANSPORT: outboxTransport
  OUTBOX_ALLOWED_SENDERS: outboxAllowedSenders
  OUTBOX_ON_AMBIGUOUS: outboxOnAmbiguous
  OUTBOX_SMTP_SENT_COPY: outboxSmtpSentCopy
  OUTBOX_MAX_ATTEMPTS: outboxMaxAttempts
  OUTBOX_BACKOFF_BASE_S: outboxBackoffBaseS
  OUTBOX_BACKOFF_MAX_S: outboxBackoffMaxS
  OUTBOX_RETRY_AFTER_MAX_S: outboxRetryAfterMaxS
  OUTBOX_CLOUD: outboxCloud
  OUTBOX_AUTHORITY_HOST: outboxAuthorityHost
  OUTBOX_GRAPH_URL: outboxGraphUrl
  OUTBOX_SMTP_HOST: outboxSmtpHost
  OUTBOX_SMTP_PORT: outboxSmtpPort
  OUTBOX_CA_BUNDLE: outboxCaBundle
  OUTBOX_HTTP_TIMEOUT_S: outboxHttpTimeoutS
  OUTBOX_SMTP_TIMEOUT_S: outboxSmtpTimeoutS
  OUTBOX_GRAPH_CONCURRENCY: outboxGraphConcurrency
  OUTBOX_SMTP_CONNECTIONS: outboxSmtpConnections
  OUTBOX_SLOTS: outboxSlots
  OUTBOX_SLOTS_CONTAINER: outboxSlotsContainer
  OUTBOX_SLOT_LEASE_S: outboxSlotLeaseS
  OUTBOX_SLOT_IDLE_S: outboxSlotIdleS
  OUTBOX_SLOT_IDLE_ALONE_S: outboxSlotIdleAloneS
  OUTBOX_SLOT_PROBE_S: outboxSlotProbeS
  OUTBOX_SLOT_TIMEOUT_S: outboxSlotTimeoutS
  OUTBOX_EXPECTED_INSTANCES: outboxExpectedInstances
  OUTBOX_GRAPH_BUDGET_REQUESTS: outboxGraphBudgetRequests
  OUTBOX_GRAPH_BUDGET_WINDOW_S: outboxGraphBudgetWindowS
  OUTBOX_SMTP_RATE_PER_WINDOW: outboxSmtpRatePerWindow
  OUTBOX_SMTP_RATE_WINDOW_S: outboxSmtpRateWindowS
  OUTBOX_PACING_MAX_WAIT_S: outboxPacingMaxWaitS
  OUTBOX_CERT_REFRESH_S: outboxCertRefreshS
  OUTBOX_CERT_EXPIRY_MARGIN_S: outboxCertExpiryMarginS
  OUTBOX_SMTP_IDLE_S: outboxSmtpIdleS
  OUTBOX_DELEGATED_CLIENT_ID: outboxDelegatedClientId
  OUTBOX_DELEGATED_MAILBOXES: outboxDelegatedMailboxes
  OUTBOX_SIGNIN_CONTAINER: outboxSigninContainer
  OUTBOX_SIGNIN_KEY_NAME: outboxSigninKeyName
  OUTBOX_SIGNIN_RECHECK_S: outboxSigninRecheckS
  OUTBOX_KEEPALIVE_SCHEDULE: outboxKeepaliveSchedule
  OUTBOX_LEASE_S: outboxLeaseS
  OUTBOX_LARGE_ATTACHMENT_BYTES: outboxLargeAttachmentBytes
  OUTBOX_MAX_SEND_BYTES: outboxMaxSendBytes
  OUTBOX_UPLOAD_CHUNK_BYTES: outboxUploadChunkBytes
  OUTBOX_API_DEADLINE_S: outboxApiDeadlineS
  OUTBOX_MAX_AGE_S: outboxMaxAgeS
  OUTBOX_LOOKUP_SETTLE_S: outboxLookupSettleS
  OUTBOX_STORAGE_TIMEOUT_S: outboxStorageTimeoutS
}

// ----------------------------------------------------------------------------------------------------------------
// Resources
// ----------------------------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module appIdentity './app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring './app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionDays
  }
}

module storage './app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    queueName: outboxQueue
    poisonQueueName: poisonQueueName
    statusTableName: outboxStatusTable
    attachmentsContainerName: outboxAttachmentsContainer
    signinContainerName: outboxSigninContainer
    deploymentContainerName: deploymentContainerName
    hostContainerNames: hostContainerNames
    slotsContainerName: outboxSlotsContainer
    attachmentRetentionDays: attachmentRetentionDays
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module keyVault './app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module functionApp './app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: appIdentity.outputs.id
    identityClientId: appIdentity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    appSettings: outboxSettings
  }
}

module rbac './app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    functionPrincipalId: appIdentity.outputs.principalId
    storageAccountName: storage.outputs.name
    queueName: outboxQueue
    poisonQueueName: poisonQueueName
    statusTableName: outboxStatusTable
    attachmentsContainerName: outboxAttachmentsContainer
    signinContainerName: outboxSigninContainer
    deploymentContainerName: deploymentContainerName
    hostContainerNames: hostContainerNames
    slotsContainerName: outboxSlotsContainer
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    producerPrincipalIds: filter(split(replace(producerPrincipalIds, ' ', ''), ','), id => !empty(id))
    attachmentWriterPrincipalIds: filter(split(replace(attachmentWriterPrincipalIds, ' ', ''), ','), id => !empty(id))
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
  }
}

module alerts './app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    ruleName: '${abbrs.insightsScheduledQueryRules}poison-${resourceToken}'
    actionGroupName: '${abbrs.insightsActionGroups}${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    poisonQueueName: poisonQueueName
    alertEmailAddress: alertEmailAddress
  }
}

// ----------------------------------------------------------------------------------------------------------------
// Outputs become azd environment values. Names and endpoints only: nothing here is a secret
// (Application Insights runs with local auth off, so its connection string grants nothing on its own).
// ----------------------------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = appIdentity.outputs.clientId
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_URL string = functionApp.outputs.uri
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = appIdentity.outputs.principalId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.applicationInsightsConnectionString
output OUTBOX_QUEUE_URL string = '${storage.outputs.queueEndpoint}${outboxQueue}'
output OUTBOX_POISON_QUEUE_URL string = '${storage.outputs.queueEndpoint}${poisonQueueName}'

// Every role assignment of the deployment, each on the narrowest scope that works.
// Assignment names are guid(scope, principal, role): deterministic, so re-deploying never duplicates them.

@description('Principal id of the function app identity.')
param functionPrincipalId string
param storageAccountName string
param queueName string
param poisonQueueName string
param statusTableName string
param attachmentsContainerName string
param signinContainerName string
param deploymentContainerName string

@description('Containers the Functions host keeps its locks and keys in.')
param hostContainerNames array

@description('Container of the per-mailbox slot blobs.')
param slotsContainerName string
param keyVaultName string
param applicationInsightsName string

@description('Object ids that may only add messages to the outbox queue.')
param producerPrincipalIds array = []

@description('Object ids that may write blobs to the attachment container.')
param attachmentWriterPrincipalIds array = []

@description('Object id of the operator who runs azd; empty grants nothing.')
param operatorPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

// Built-in role definition ids.
var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultCertificateUser: 'db79e9a7-68ee-4b58-9aeb-b90e7c24fcba'
  keyVaultCertificatesOfficer: 'a4417e6f-fecd-4de8-b567-7b0420556985'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2024-01-01' existing = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' existing = {
  parent: blobService
  name: deploymentContainerName
}

resource attachmentsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' existing = {
  parent: blobService
  name: attachmentsContainerName
}

resource signinContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' existing = {
  parent: blobService
  name: signinContainerName
}

resource slotsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' existing = {
  parent: blobService
  name: slotsContainerName
}

resource hostContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' existing = [for containerName in hostContainerNames: {
  parent: blobService
  name: containerName
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2024-01-01' existing = {
  parent: storage
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2024-01-01' existing = {
  parent: queueService
  name: queueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2024-01-01' existing = {
  parent: queueService
  name: poisonQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2024-01-01' existing = {
  parent: storage
  name: 'default'
}

resource statusTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2024-01-01' existing = {
  parent: tableService
  name: statusTableName
}

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' existing = {
  name: keyVaultName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// ---------------------------------------------------------------------------------------------------------------
// The function identity
// ---------------------------------------------------------------------------------------------------------------

// Trigger on the outbox queue: read, delete, and update (the host releases a failed message with UpdateMessage;
// outbox re-queues retries and extends its lease). Message Processor alone lacks update, hence Contributor,
// scoped to this one queue.
resource functionQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, functionPrincipalId, roles.storageQueueDataContributor)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Poison writes: outbox puts classified envelopes there, and the host moves a message there after
// maxDequeueCount failures (it calls CreateIfNotExists first, which Message Sender alone may not do).
resource functionPoisonQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(poisonQueue.id, functionPrincipalId, roles.storageQueueDataContributor)
  scope: poisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Status rows: claim, update and read one row per message id.
resource functionStatusTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(statusTable.id, functionPrincipalId, roles.storageTableDataContributor)
  scope: statusTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Attachments: read claim-check blobs; write an oversized poison original next to them.
resource functionAttachments 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(attachmentsContainer.id, functionPrincipalId, roles.storageBlobDataContributor)
  scope: attachmentsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Delegated sign-ins: read a mailbox's sealed token cache, write it back after a refresh (ETag-guarded).
// The key that opens them is a Key Vault secret, read with the Certificate User role below.
resource functionSignins 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(signinContainer.id, functionPrincipalId, roles.storageBlobDataContributor)
  scope: signinContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Flex Consumption writes and reads the deployment package with this identity.
resource functionDeploymentContainer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deploymentContainer.id, functionPrincipalId, roles.storageBlobDataContributor)
  scope: deploymentContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Mailbox slots: create the slot blobs, lease, renew and release them (shared/storage/slots.py).
resource functionSlots 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(slotsContainer.id, functionPrincipalId, roles.storageBlobDataContributor)
  scope: slotsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The host's locks (azure-webjobs-hosts) and function keys (azure-webjobs-secrets).
resource functionHostContainers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (containerName, i) in hostContainerNames: {
  name: guid(hostContainers[i].id, functionPrincipalId, roles.storageBlobDataContributor)
  scope: hostContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// The certificate's private key is read through the secrets API (secret name = certificate name).
resource functionVault 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionPrincipalId, roles.keyVaultCertificateUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultCertificateUser)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Telemetry to a component with local auth off.
resource functionTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, functionPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Producers: add messages to the outbox queue, nothing else (they cannot read, delete or see other queues).
// ---------------------------------------------------------------------------------------------------------------

resource producerQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for producerId in producerPrincipalIds: {
  name: guid(queue.id, producerId, roles.storageQueueDataMessageSender)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
    principalId: producerId
    principalType: 'ServicePrincipal'
  }
}]

resource attachmentWriters 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for writerId in attachmentWriterPrincipalIds: {
  name: guid(attachmentsContainer.id, writerId, roles.storageBlobDataContributor)
  scope: attachmentsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: writerId
    principalType: 'ServicePrincipal'
  }
}]

// ---------------------------------------------------------------------------------------------------------------
// The operator (whoever runs azd), for `outbox poison list|show|requeue|purge`, `outbox status` and the
// certificate scripts: create and rotate the certificate; read, release and delete poison; put a message back
// on the outbox queue; reset its status row; read or delete an oversized original parked next to the
// attachments. No role on the account, the resource group or the subscription.
// ---------------------------------------------------------------------------------------------------------------

resource operatorVault 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, roles.keyVaultCertificatesOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultCertificatesOfficer)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

// `outbox login | accounts | logout` write and list the sign-ins, and `login` reads the sealing key to seal
// what it stores (Secrets User: read only; the key itself is created once by someone holding Secrets Officer,
// which no template grants: see create-signin-key.sh).
resource operatorSignins 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(signinContainer.id, operatorPrincipalId, roles.storageBlobDataContributor)
  scope: signinContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorVaultSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorPoisonQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(poisonQueue.id, operatorPrincipalId, roles.storageQueueDataContributor)
  scope: poisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(queue.id, operatorPrincipalId, roles.storageQueueDataMessageSender)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorStatusTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(statusTable.id, operatorPrincipalId, roles.storageTableDataContributor)
  scope: statusTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorAttachments 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(attachmentsContainer.id, operatorPrincipalId, roles.storageBlobDataContributor)
  scope: attachmentsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

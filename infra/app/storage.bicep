// One storage account for the host, the deployment package and outbox's own data.
// Locked down: no shared keys (every caller authenticates with Entra ID), TLS 1.2, HTTPS only, no anonymous blobs.

@description('Storage account name: 3-24 lowercase letters and digits.')
@minLength(3)
@maxLength(24)
param name string
param location string
param tags object
param skuName string = 'Standard_ZRS'
param queueName string
param poisonQueueName string
param statusTableName string
param attachmentsContainerName string

@description('Container of the delegated sign-ins (sealed token caches): no producer is granted it.')
param signinContainerName string
param deploymentContainerName string

@description('Days after which attachment blobs are deleted; 0 keeps them.')
param attachmentRetentionDays int = 30

@description('Workspace receiving the queue write log that the poison alert reads.')
param logAnalyticsWorkspaceId string

@description('Containers the Functions host keeps its locks and keys in, created here so the function identity can be granted them one by one instead of every container of the account.')
param hostContainerNames array

@description('Container of the per-mailbox slot blobs (OUTBOX_SLOTS=blob): leases only, no lifecycle rule.')
param slotsContainerName string

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  // checkov:skip=CKV_AZURE_35:Producers and the Flex Consumption app (no VNet in this template) reach storage over public endpoints; every request needs an Entra token with a scoped role because shared keys are off.
  // checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: public endpoint on, shared keys off, access by RBAC only.
  // checkov:skip=CKV_AZURE_206:Zone-redundant (Standard_ZRS) by default; messages are transient and a geo failover changes endpoints anyway. Set storageSkuName to Standard_GZRS for geo-redundancy.
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2024-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource attachmentsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = {
  parent: blobService
  name: attachmentsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource signinContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = {
  parent: blobService
  name: signinContainerName
  properties: {
    publicAccess: 'None'
  }
}

// One empty blob per mailbox slot; instances share Outlook's per-mailbox limits by leasing them.
resource slotsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = {
  parent: blobService
  name: slotsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource hostContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = [for containerName in hostContainerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2024-01-01' = {
  parent: storage
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2024-01-01' = {
  parent: queueService
  name: queueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2024-01-01' = {
  parent: queueService
  name: poisonQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2024-01-01' = {
  parent: storage
  name: 'default'
}

resource statusTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2024-01-01' = {
  parent: tableService
  name: statusTableName
}

// Claim-check blobs are only needed until the message is sent or handled as poison.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2024-01-01' = if (attachmentRetentionDays > 0) {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-attachments'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${attachmentsContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: attachmentRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

// Queue writes (PutMessage, UpdateMessage) go to Log Analytics: the poison alert counts PutMessage on the
// poison queue, which catches both outbox's classified envelopes and the host's own moves after
// maxDequeueCount crashes. Reads are not logged: the trigger polls constantly.
resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'queue-writes'
  scope: queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table

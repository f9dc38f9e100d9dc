// Key Vault for the sending app's certificate. RBAC mode (no access policies), soft delete with purge protection:
// a deleted certificate can be recovered for 90 days and nobody can purge it early.

@description('Key Vault name: 3-24 letters, digits and hyphens.')
@minLength(3)
@maxLength(24)
param name string
param location string
param tags object

@description('Workspace receiving the vault audit log (who read or changed the certificate).')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  name: name
  location: location
  tags: tags
  // checkov:skip=CKV_AZURE_109:The Flex Consumption app runs without a VNet here and has no fixed outbound IPs, so a firewall cannot name it; every request needs an Entra token and a data-plane RBAC role.
  // checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109: public endpoint on, access by RBAC only.
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri

// The function's user-assigned managed identity: it reads storage and the certificate and publishes telemetry.
// User-assigned (not system-assigned) so role assignments exist before the site first starts.

@description('Name of the managed identity.')
param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId

// Flex Consumption plan and the Python function app. The app runs as the user-assigned identity for everything:
// host storage, the deployment package, the outbox queues and table, Key Vault and Application Insights.

param name string
param planName string
param location string
param tags object

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity: picks it for identity-based connections and DefaultAzureCredential.')
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string

@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 4

@description('The outbox contract settings (OUTBOX_*), by name.')
param appSettings object

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  // checkov:skip=CKV_AZURE_225:Zone redundancy of Flex Consumption is offered in few regions; messages wait in zone-redundant storage and are picked up again after a zone outage.
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

// Settings the platform and the SDKs read. Flex Consumption rejects FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE and the content-share settings: the runtime and the
// package location live in functionAppConfig instead.
var platformSettings = {
  // The host's own storage and the queue trigger's connection, identity-based (no connection string exists).
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  // Telemetry with Entra auth: local auth is off on the component.
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // DefaultAzureCredential (Key Vault, storage from the SDKs) picks the user-assigned identity by this.
  AZURE_CLIENT_ID: identityClientId
  // The worker indexes only a root file: main.py imports the app from the function_app package.
  PYTHON_SCRIPT_FILE_NAME: 'main.py'
  // The queue function is synchronous: one worker thread per message in flight; host.json lets 63 in.
  // 32 threads: 20 mailboxes at 100 ms Graph latency reach 90-94 % of the CPU-bound rate, 64 threads 85-91 %
  // (benchmarks/bench_mailboxes.py). The default min(32, cores + 4) is 5; the worker has no upper bound
  // since 2021 (azure-functions-python-worker#890).
  PYTHON_THREADPOOL_THREAD_COUNT: '32'
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'outbox'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  // checkov:skip=CKV_AZURE_17:Client certificates are not used: callers of the ad hoc send endpoint authenticate with a function key over TLS 1.2; the queue trigger has no HTTP surface.
  // checkov:skip=CKV_AZURE_222:Public endpoint kept: azd deploys through it and producers may call the ad hoc send endpoint; this template creates no VNet (docs/deploy.md, hardening).
  // checkov:skip=CKV_AZURE_212:numberOfWorkers does not apply to Flex Consumption, which scales per event up to maximumInstanceCount.
  // checkov:skip=CKV_AZURE_213:No health check path: a queue-triggered app is not behind a load balancer that could route around a sick instance.
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// App settings as their own resource, as in Microsoft's Flex Consumption templates: the values read other
// resources at deployment time (endpoints, the connection string), which a loop in siteConfig could not.
resource appSettingsConfig 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov reads every sites/config as the web config; this one holds app settings only (web checks: the site).
  // checkov:skip=CKV_AZURE_13:Not the auth settings: the ad hoc send endpoint is protected by a function key and the queue trigger has no HTTP surface.
  // checkov:skip=CKV_AZURE_63:Not the web config: HTTP logging is a Windows App Service feature; requests and logs go to Application Insights.
  // checkov:skip=CKV_AZURE_65:Not the web config: detailed error pages are a Windows App Service feature; errors go to Application Insights.
  parent: site
  // checkov:skip=CKV_AZURE_66:Not the web config: failed request tracing is a Windows App Service feature; failures go to Application Insights.
  // checkov:skip=CKV_AZURE_80:Not the web config, and a Python app has no .NET Framework version.
  // checkov:skip=CKV_AZURE_88:Not the web config: the app mounts no Azure Files share (Flex Consumption runs from the deployment container).
  // checkov:skip=CKV_AZURE_222:Not the web config: public network access is set, and its skip explained, on the site.
  name: 'appsettings'
  properties: union(appSettings, platformSettings)
}

// Publishing goes through Entra ID (azd uses the deployer's token); basic-auth FTP and SCM stay off.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output id string = site.id
output uri string = 'https://${site.properties.defaultHostName}'

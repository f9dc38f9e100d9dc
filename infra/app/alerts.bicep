// The poison alert. Storage's QueueMessageCount metric is per account, not per queue, so it cannot tell the
// poison queue from the outbox queue; instead a log search alert counts successful PutMessage calls on the
// poison queue in the queue write log. That catches outbox's classified envelopes AND the host's own moves
// (a function that crashed maxDequeueCount times never logs an outcome), without depending on app logging.

param ruleName string
param actionGroupName string
param location string
param tags object
param logAnalyticsWorkspaceId string
param poisonQueueName string

@description('Email address told when poison appears; empty creates no action group.')
param alertEmailAddress string = ''

@description('How often the rule looks, and over which window (ISO 8601 duration).')
param evaluationFrequency string = 'PT5M'

var logAnalyticsReaderRoleId = '73c42c96-874c-492b-b04d-ab87d138a893'
var poisonQuery = 'StorageQueueLogs | where OperationName == "PutMessage" and toint(StatusCode) between (200 .. 299) | where Uri contains "/${poisonQueueName}/messages" | summarize PoisonMessages = count() by AccountName'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmailAddress)) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'outbox'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmailAddress
        useCommonAlertSchema: true
      }
    ]
  }
}

resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: ruleName
  location: location
  tags: tags
  // The workspace has local auth off, so the rule queries it with its own identity.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    displayName: 'outbox: messages reached ${poisonQueueName}'
    description: 'A message was put on the poison queue. Read it with `outbox poison list` (or docs/deploy.md, reading poison): the envelope names the category and the fix.'
    severity: 2
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: evaluationFrequency
    windowSize: evaluationFrequency
    // StorageQueueLogs only exists once the first queue write has been logged; validation would fail before.
    skipQueryValidation: true
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: poisonQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'PoisonMessages'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: empty(alertEmailAddress) ? [] : [
        actionGroup.id
      ]
    }
  }
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: last(split(logAnalyticsWorkspaceId, '/'))
}

resource alertReadsWorkspace 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, poisonAlert.id, logAnalyticsReaderRoleId)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsReaderRoleId)
    principalId: poisonAlert.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output poisonAlertId string = poisonAlert.id

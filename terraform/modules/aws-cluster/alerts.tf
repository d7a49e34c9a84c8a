# Baton's events on an SNS topic ([notify.sns]) and its metrics on a CloudWatch dashboard
# ([metrics.cloudwatch]; docs/src/notifications.md).

resource "aws_sns_topic" "alerts" {
  count             = var.notifications ? 1 : 0
  name              = "${var.name}-baton-alerts"
  kms_master_key_id = local.kms_key_arn
  tags              = local.tags
}

resource "aws_sns_topic_subscription" "email" {
  for_each  = var.notifications ? toset(var.alert_emails) : toset([])
  topic_arn = aws_sns_topic.alerts[0].arn
  protocol  = "email"
  endpoint  = each.value
}

locals {
  dashboard = {
    widgets = [
      {
        type = "metric", x = 0, y = 0, width = 12, height = 6
        properties = {
          title   = "Where the group runs (1 = active)"
          region  = local.region, view = "timeSeries", stat = "Maximum", period = 60
          metrics = [for s in local.servers : [var.metrics_namespace, "GroupActive", "Cluster", var.name, "Server", s.name, "Group", var.group_name]]
        }
      },
      {
        type = "metric", x = 12, y = 0, width = 12, height = 6
        properties = {
          title   = "Failovers taken over"
          region  = local.region, view = "timeSeries", stat = "Sum", period = 300
          metrics = [for s in local.servers : [var.metrics_namespace, "FailoverCount", "Cluster", var.name, "Server", s.name, "Group", var.group_name]]
        }
      },
      {
        type = "metric", x = 0, y = 6, width = 12, height = 6
        properties = {
          title  = "Failover time by phase (ms, worst)"
          region = local.region, view = "bar", stat = "Maximum", period = 86400
          metrics = flatten([for s in local.servers : [for p in ["Detection", "Decision", "Claim", "Activation", "Total"] :
          [var.metrics_namespace, "FailoverPhaseTime", "Cluster", var.name, "Server", s.name, "Group", var.group_name, "Phase", p]]])
        }
      },
      {
        type = "metric", x = 12, y = 6, width = 12, height = 6
        properties = {
          title  = "Heartbeat round trip (ms, average)"
          region = local.region, view = "timeSeries", stat = "Average", period = 60
          metrics = flatten([for s in local.servers : [for p in local.servers :
          [var.metrics_namespace, "HeartbeatRoundTrip", "Cluster", var.name, "Server", s.name, "Peer", p.name, "Path", "0"] if p.name != s.name]])
        }
      },
    ]
  }
}

resource "aws_cloudwatch_dashboard" "baton" {
  count          = var.metrics ? 1 : 0
  dashboard_name = "baton-${var.name}"
  dashboard_body = jsonencode(local.dashboard)
}

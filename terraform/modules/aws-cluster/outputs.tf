output "servers" {
  description = "The servers as baton.toml names them: name, zone, private address."
  value       = local.servers
}

output "instance_ids" {
  description = "EC2 instance IDs, in server order."
  value       = aws_instance.server[*].id
}

output "baton_toml" {
  description = "The /etc/baton/baton.toml every server gets."
  value       = local.baton_toml
}

output "user_data" {
  description = "Each server's cloud-init user data, in server order (no secret in it)."
  value       = local.user_data
}

output "iam_policy_json" {
  description = "The instance role's `baton` policy: what `baton cloud iam-policy` prints for baton_toml."
  value       = local.baton_policy
}

output "role_name" {
  description = "The servers' IAM role (attach more policies here, e.g. for the application)."
  value       = aws_iam_role.server.name
}

output "security_group_id" {
  description = "The servers' security group."
  value       = aws_security_group.servers.id
}

output "vpc_id" {
  description = "The VPC of the servers (created or given)."
  value       = local.vpc_id
}

output "subnet_ids" {
  description = "The servers' subnets, in server order."
  value       = local.subnet_ids
}

output "service_address" {
  description = "Where clients reach the service: the VIP, the Elastic IP's public address, or the DNS name."
  value = var.pattern == "vip" ? var.vip_address : (
    var.pattern == "eip" ? (var.eip_allocation_id == null ? aws_eip.service[0].public_ip : var.eip_allocation_id) :
    trimsuffix(var.dns_record_name, ".")
  )
}

output "cluster_key_ref" {
  description = "Where the cluster key is: the Secrets Manager secret's ARN or the SSM parameter's name."
  value       = local.key_ref
}

output "kms_key_arn" {
  description = "The KMS key of the secret, the volumes, the topic and the witness."
  value       = local.kms_key_arn
}

output "sns_topic_arn" {
  description = "The alerts topic (null without notifications)."
  value       = local.sns_topic_arn
}

output "dashboard_name" {
  description = "The CloudWatch dashboard (null without metrics)."
  value       = var.metrics ? aws_cloudwatch_dashboard.baton[0].dashboard_name : null
}

output "witness" {
  description = "The witness: its kind and where it is (bucket and key, table and item, or URL)."
  value = {
    kind   = var.witness
    bucket = local.witness_bucket
    key    = var.witness == "s3" ? local.witness_key : null
    table  = local.witness_table
    item   = var.witness == "dynamodb" ? var.name : null
    url    = var.witness_url
  }
}

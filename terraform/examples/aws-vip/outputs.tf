output "service_address" {
  description = "Where clients reach the service."
  value       = module.cluster.service_address
}

output "servers" {
  description = "The servers: name, zone, private address."
  value       = module.cluster.servers
}

output "instance_ids" {
  description = "EC2 instance IDs, in server order."
  value       = module.cluster.instance_ids
}

output "baton_toml" {
  description = "The configuration every server runs."
  value       = module.cluster.baton_toml
}

output "iam_policy_json" {
  description = "The servers' baton policy (what baton cloud iam-policy prints for baton_toml)."
  value       = module.cluster.iam_policy_json
}

output "user_data" {
  description = "Each server's cloud-init user data."
  value       = module.cluster.user_data
}

output "dashboard_name" {
  description = "The CloudWatch dashboard of the cluster."
  value       = module.cluster.dashboard_name
}

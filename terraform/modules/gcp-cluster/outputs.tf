output "servers" {
  description = "The servers as baton.toml names them: name, zone, private address."
  value       = local.servers
}

output "baton_toml" {
  description = "The /etc/baton/baton.toml every server gets."
  value       = local.baton_toml
}

output "user_data" {
  description = "Each server's cloud-init user data, in server order (no secret in it)."
  value       = local.user_data
}

output "role_permissions" {
  description = "The custom role's permissions: what `baton cloud iam-policy --cloud gcp` prints for baton_toml."
  value       = local.role_permissions
}

output "service_account_email" {
  description = "The servers' service account (grant it more roles for the application)."
  value       = google_service_account.server.email
}

output "service_address" {
  description = "Where clients reach the service: the forwarding rule's address, the VIP, or the DNS name."
  value       = var.pattern == "lb-probe" ? google_compute_forwarding_rule.this[0].ip_address : (var.pattern == "vip" ? var.vip_address : "${var.dns_record}.${coalesce(var.dns_name, "-")}")
}

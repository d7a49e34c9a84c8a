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

output "custom_role" {
  description = "The custom role's actions and assignable scopes: what `baton cloud iam-policy --cloud azure` prints for baton_toml."
  value       = local.custom_role
}

output "identity_principal_id" {
  description = "The servers' user-assigned identity (grant it more roles for the application)."
  value       = azurerm_user_assigned_identity.server.principal_id
}

output "service_address" {
  description = "Where clients reach the service: the load balancer's frontend, the VIP, or the DNS name."
  value       = var.pattern == "lb-probe" ? local.frontend_ip : (var.pattern == "vip" ? var.vip_address : "${var.dns_record}.${coalesce(var.dns_zone_name, "-")}")
}

output "key_vault_uri" {
  description = "The key vault holding the cluster key (secret cluster-key)."
  value       = azurerm_key_vault.this.vault_uri
}

data "azurerm_client_config" "current" {}

locals {
  tags          = merge(var.tags, { "baton-cluster" = var.name })
  create_rg     = var.resource_group_name == null
  rg_name       = local.create_rg ? azurerm_resource_group.this[0].name : var.resource_group_name
  rg_id         = "/subscriptions/${data.azurerm_client_config.current.subscription_id}/resourceGroups/${local.rg_name}"
  subnet_cidr   = cidrsubnet(var.address_space, 8, 1)
  lb_name       = "lb-${var.name}-baton"
  route_table   = "rt-${var.name}-baton"
  frontend_ip   = var.frontend_ip != null ? var.frontend_ip : cidrhost(local.subnet_cidr, 100)
  first_lb_rule = length(var.service_ports) > 0 ? "service-${var.service_ports[0]}" : null

  servers = [
    for i in range(var.server_count) : {
      name    = "node-${i + 1}"
      zone    = var.zones[i % length(var.zones)]
      address = cidrhost(local.subnet_cidr, var.host_number + i)
    }
  ]

  # The custom role: what `baton cloud iam-policy --cloud azure` prints for baton_toml
  # (tests/terraform/check.py compares them).
  custom_role = {
    actions = sort(concat(
      var.pattern == "lb-probe" ? ["Microsoft.Network/loadBalancers/read"] : [],
      var.pattern == "vip" ? ["Microsoft.Network/locations/operations/read", "Microsoft.Network/routeTables/read", "Microsoft.Network/routeTables/write"] : [],
      var.pattern == "dns" ? ["Microsoft.Network/privateDnsZones/A/delete", "Microsoft.Network/privateDnsZones/A/read", "Microsoft.Network/privateDnsZones/A/write", "Microsoft.Network/privateDnsZones/read"] : [],
    ))
    scopes = [local.rg_id]
  }

  baton_toml = templatefile("${path.module}/templates/baton.toml.tftpl", {
    name            = var.name
    subscription_id = data.azurerm_client_config.current.subscription_id
    resource_group  = local.rg_name
    client_id       = azurerm_user_assigned_identity.server.client_id
    admin_cidrs     = var.admin_cidrs
    servers         = local.servers
    witness_url     = var.witness_url
    group           = var.group_name
    pattern         = var.pattern
    probe_port      = var.probe_port
    lb_name         = local.lb_name
    lb_rule         = local.first_lb_rule
    vip_address     = var.vip_address
    route_table     = local.route_table
    dns_zone_name   = var.dns_zone_name
    dns_record      = var.dns_record
    dns_ttl         = var.dns_ttl
    app_unit        = var.app_unit
    extra_config    = var.extra_config
  })

  user_data = [
    for s in local.servers : templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
      server         = s.name
      cluster        = var.name
      config_b64     = base64encode(local.baton_toml)
      client_id      = azurerm_user_assigned_identity.server.client_id
      vault_uri      = azurerm_key_vault.this.vault_uri
      package_url    = var.package_url
      package_sha256 = var.package_sha256 == null ? "" : var.package_sha256
      extra_commands = var.extra_cloud_init
    })
  ]
}

resource "azurerm_resource_group" "this" {
  count    = local.create_rg ? 1 : 0
  name     = "rg-${var.name}-baton"
  location = var.location
  tags     = local.tags
}

# ------------------------------------------------------------------------------ identity and role

resource "azurerm_user_assigned_identity" "server" {
  name                = "id-${var.name}-baton"
  resource_group_name = local.rg_name
  location            = var.location
  tags                = local.tags
}

resource "azurerm_role_definition" "baton" {
  name        = "Baton cluster ${var.name}"
  scope       = local.rg_id
  description = "What the Baton agents of cluster ${var.name} change and read (baton cloud iam-policy --cloud azure)."

  permissions {
    actions = local.custom_role.actions
  }

  assignable_scopes = local.custom_role.scopes
}

resource "azurerm_role_assignment" "baton" {
  scope              = local.rg_id
  role_definition_id = azurerm_role_definition.baton.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.server.principal_id
}

# ------------------------------------------------------------------------------ the cluster key

resource "random_string" "vault" {
  length  = 6
  special = false
  upper   = false
}

resource "random_password" "cluster_key" {
  # 64 characters: Baton needs at least 32 bytes and uses the text as it is.
  length  = 64
  special = false
}

resource "azurerm_key_vault" "this" {
  #checkov:skip=CKV2_AZURE_32:The vault is reached through the servers' subnet's service endpoint and its firewall; a private endpoint (and its DNS zone) is the VNet owner's choice.
  name                          = "kv-${var.name}-${random_string.vault.result}"
  resource_group_name           = local.rg_name
  location                      = var.location
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "standard"
  enable_rbac_authorization     = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 7
  public_network_access_enabled = true

  network_acls {
    default_action             = "Deny"
    bypass                     = "AzureServices"
    virtual_network_subnet_ids = [azurerm_subnet.servers.id]
    ip_rules                   = var.key_vault_allowed_cidrs
  }

  tags = local.tags
}

# Terraform writes the key; the servers' identity reads it.
resource "azurerm_role_assignment" "vault_writer" {
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_key_vault_secret" "cluster_key" {
  #checkov:skip=CKV_AZURE_41:The cluster key does not expire by date; it is rotated with Baton's own procedure (accept_key_files, docs/src/operations.md).
  name         = "cluster-key"
  key_vault_id = azurerm_key_vault.this.id
  value        = random_password.cluster_key.result
  content_type = "text/plain"
  depends_on   = [azurerm_role_assignment.vault_writer]
}

resource "azurerm_role_assignment" "vault_reader" {
  scope                = "${azurerm_key_vault.this.id}/secrets/${azurerm_key_vault_secret.cluster_key.name}"
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.server.principal_id
}

resource "azurerm_virtual_network" "this" {
  name                = "vnet-${var.name}-baton"
  resource_group_name = local.rg_name
  location            = var.location
  address_space       = [var.address_space]
  tags                = local.tags
}

resource "azurerm_subnet" "servers" {
  name                 = "snet-servers"
  resource_group_name  = local.rg_name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [local.subnet_cidr]
  service_endpoints    = ["Microsoft.KeyVault"]
}

resource "azurerm_network_security_group" "servers" {
  name                = "nsg-${var.name}-baton"
  resource_group_name = local.rg_name
  location            = var.location
  tags                = local.tags
}

locals {
  client_cidrs = length(var.client_cidrs) > 0 ? var.client_cidrs : [var.address_space]
  nsg_rules = concat(
    [
      { name = "baton-heartbeat", priority = 100, protocol = "Udp", port = "7421", from = [local.subnet_cidr] },
      { name = "baton-api", priority = 110, protocol = "Tcp", port = "7420", from = concat([local.subnet_cidr], var.admin_cidrs) },
      { name = "baton-mirror", priority = 120, protocol = "Tcp", port = "7790", from = [local.subnet_cidr] },
    ],
    length(var.service_ports) == 0 ? [] : [
      { name = "service", priority = 200, protocol = "Tcp", port = join(",", var.service_ports), from = local.client_cidrs },
    ],
  )
}

resource "azurerm_network_security_rule" "inbound" {
  for_each                    = { for r in local.nsg_rules : r.name => r }
  name                        = each.key
  resource_group_name         = local.rg_name
  network_security_group_name = azurerm_network_security_group.servers.name
  priority                    = each.value.priority
  direction                   = "Inbound"
  access                      = "Allow"
  protocol                    = each.value.protocol
  source_port_range           = "*"
  destination_port_ranges     = split(",", each.value.port)
  source_address_prefixes     = each.value.from
  destination_address_prefix  = local.subnet_cidr
}

# The load balancer's probe comes from 168.63.129.16 (service tag AzureLoadBalancer).
resource "azurerm_network_security_rule" "probe" {
  count                       = var.pattern == "lb-probe" ? 1 : 0
  name                        = "baton-lb-probe"
  resource_group_name         = local.rg_name
  network_security_group_name = azurerm_network_security_group.servers.name
  priority                    = 130
  direction                   = "Inbound"
  access                      = "Allow"
  protocol                    = "Tcp"
  source_port_range           = "*"
  destination_port_range      = tostring(var.probe_port)
  source_address_prefix       = "AzureLoadBalancer"
  destination_address_prefix  = local.subnet_cidr
}

resource "azurerm_subnet_network_security_group_association" "servers" {
  subnet_id                 = azurerm_subnet.servers.id
  network_security_group_id = azurerm_network_security_group.servers.id
}

# ------------------------------------------------------------------------------ patterns

resource "azurerm_lb" "this" {
  count               = var.pattern == "lb-probe" ? 1 : 0
  name                = local.lb_name
  resource_group_name = local.rg_name
  location            = var.location
  sku                 = "Standard"

  frontend_ip_configuration {
    name                          = "service"
    subnet_id                     = azurerm_subnet.servers.id
    private_ip_address_allocation = "Static"
    private_ip_address            = local.frontend_ip
    zones                         = var.zones
  }

  tags = local.tags
}

resource "azurerm_lb_backend_address_pool" "servers" {
  count           = var.pattern == "lb-probe" ? 1 : 0
  name            = "servers"
  loadbalancer_id = azurerm_lb.this[0].id
}

resource "azurerm_lb_probe" "baton" {
  count               = var.pattern == "lb-probe" ? 1 : 0
  name                = "baton"
  loadbalancer_id     = azurerm_lb.this[0].id
  protocol            = "Tcp"
  port                = var.probe_port
  interval_in_seconds = 5
  number_of_probes    = 2
}

resource "azurerm_lb_rule" "service" {
  for_each                       = var.pattern == "lb-probe" ? toset([for p in var.service_ports : tostring(p)]) : toset([])
  name                           = "service-${each.value}"
  loadbalancer_id                = azurerm_lb.this[0].id
  protocol                       = "Tcp"
  frontend_port                  = tonumber(each.value)
  backend_port                   = tonumber(each.value)
  frontend_ip_configuration_name = "service"
  backend_address_pool_ids       = [azurerm_lb_backend_address_pool.servers[0].id]
  probe_id                       = azurerm_lb_probe.baton[0].id
  disable_outbound_snat          = true
}

resource "azurerm_network_interface_backend_address_pool_association" "servers" {
  count                   = var.pattern == "lb-probe" ? var.server_count : 0
  network_interface_id    = azurerm_network_interface.server[count.index].id
  ip_configuration_name   = "primary"
  backend_address_pool_id = azurerm_lb_backend_address_pool.servers[0].id
}

# pattern = "vip": Baton writes the VIP's route in this table; Terraform leaves routes alone.
resource "azurerm_route_table" "vip" {
  count               = var.pattern == "vip" ? 1 : 0
  name                = local.route_table
  resource_group_name = local.rg_name
  location            = var.location
  tags                = local.tags

  lifecycle {
    ignore_changes = [route]
  }
}

resource "azurerm_subnet_route_table_association" "vip" {
  count          = var.pattern == "vip" ? 1 : 0
  subnet_id      = azurerm_subnet.servers.id
  route_table_id = azurerm_route_table.vip[0].id
}

resource "azurerm_private_dns_zone" "this" {
  count               = var.pattern == "dns" ? 1 : 0
  name                = var.dns_zone_name
  resource_group_name = local.rg_name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "this" {
  count                 = var.pattern == "dns" ? 1 : 0
  name                  = "vnet-${var.name}"
  resource_group_name   = local.rg_name
  private_dns_zone_name = azurerm_private_dns_zone.this[0].name
  virtual_network_id    = azurerm_virtual_network.this.id
  tags                  = local.tags
}

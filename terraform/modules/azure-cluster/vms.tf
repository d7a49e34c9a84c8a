# The servers. user data (custom_data) changes are ignored once a server exists: roll a
# new package or configuration one server at a time with terraform apply -replace.

resource "azurerm_network_interface" "server" {
  count                 = var.server_count
  name                  = "nic-${var.name}-${local.servers[count.index].name}"
  resource_group_name   = local.rg_name
  location              = var.location
  ip_forwarding_enabled = var.pattern == "vip"
  tags                  = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.servers.id
    private_ip_address_allocation = "Static"
    private_ip_address            = local.servers[count.index].address
  }
}

resource "azurerm_linux_virtual_machine" "server" {
  #checkov:skip=CKV_AZURE_151:Encryption at host needs a subscription feature the module cannot assume; the OS disk is encrypted at rest by the platform.
  count                           = var.server_count
  name                            = "vm-${var.name}-${local.servers[count.index].name}"
  computer_name                   = local.servers[count.index].name
  resource_group_name             = local.rg_name
  location                        = var.location
  zone                            = local.servers[count.index].zone
  size                            = var.vm_size
  admin_username                  = var.admin_username
  disable_password_authentication = true
  allow_extension_operations      = false
  network_interface_ids           = [azurerm_network_interface.server[count.index].id]
  custom_data                     = base64encode(local.user_data[count.index])

  admin_ssh_key {
    username   = var.admin_username
    public_key = var.admin_ssh_public_key
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.server.id]
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
  }

  source_image_reference {
    publisher = "Debian"
    offer     = "debian-12"
    sku       = "12-gen2"
    version   = "latest"
  }

  tags = merge(local.tags, { "baton-server" = local.servers[count.index].name })

  lifecycle {
    ignore_changes = [custom_data, source_image_reference]
  }

  depends_on = [azurerm_role_assignment.vault_reader, azurerm_role_assignment.baton]
}

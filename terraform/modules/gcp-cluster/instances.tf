# The servers. user-data changes are ignored once a server exists: roll a new package or
# configuration one server at a time with terraform apply -replace.

resource "google_compute_instance" "server" {
  #checkov:skip=CKV_GCP_38:A customer-supplied key must be sent with every start of the VM, which an unattended HA server cannot do; the disk is encrypted with Google's keys.
  count          = var.server_count
  project        = var.project
  name           = "${var.name}-${local.servers[count.index].name}"
  zone           = local.servers[count.index].zone
  machine_type   = var.machine_type
  can_ip_forward = var.pattern == "vip"
  tags           = [local.tag]
  labels         = merge(local.labels, { "baton-server" = local.servers[count.index].name })

  boot_disk {
    initialize_params {
      image = var.image
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.servers.id
    network_ip = local.servers[count.index].address
  }

  metadata = {
    user-data              = local.user_data[count.index]
    block-project-ssh-keys = "true"
    enable-oslogin         = "TRUE"
  }

  service_account {
    email  = google_service_account.server.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  lifecycle {
    ignore_changes = [metadata["user-data"], boot_disk]
  }

  depends_on = [google_secret_manager_secret_iam_member.server, google_project_iam_member.baton, google_secret_manager_secret_version.cluster_key]
}

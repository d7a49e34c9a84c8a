locals {
  labels       = merge(var.labels, { "baton-cluster" = var.name })
  network_name = "${var.name}-baton"
  zone_name    = "${var.name}-baton"
  backend_name = "${var.name}-baton"
  tag          = "${var.name}-baton"
  client_cidrs = length(var.client_cidrs) > 0 ? var.client_cidrs : [var.subnet_cidr]

  servers = [
    for i in range(var.server_count) : {
      name    = "node-${i + 1}"
      zone    = var.zones[i % length(var.zones)]
      address = cidrhost(var.subnet_cidr, var.host_number + i)
    }
  ]

  # The custom role: what `baton cloud iam-policy --cloud gcp` prints for baton_toml
  # (tests/terraform/check.py compares them).
  role_permissions = sort(concat(
    var.pattern == "dns" ? ["dns.changes.create", "dns.changes.get", "dns.managedZones.get", "dns.resourceRecordSets.create", "dns.resourceRecordSets.delete", "dns.resourceRecordSets.list", "dns.resourceRecordSets.update"] : [],
    var.pattern == "vip" ? ["compute.globalOperations.get", "compute.instances.get", "compute.networks.updatePolicy", "compute.routes.create", "compute.routes.delete", "compute.routes.get"] : [],
    var.pattern == "lb-probe" ? ["compute.backendServices.get", "compute.healthChecks.get", "compute.regionBackendServices.get", "compute.regionHealthChecks.get"] : [],
  ))

  baton_toml = templatefile("${path.module}/templates/baton.toml.tftpl", {
    name         = var.name
    project      = var.project
    region       = var.region
    admin_cidrs  = var.admin_cidrs
    servers      = local.servers
    witness_url  = var.witness_url
    group        = var.group_name
    pattern      = var.pattern
    probe_port   = var.probe_port
    backend_name = local.backend_name
    vip_address  = var.vip_address
    network      = local.network_name
    zone_name    = local.zone_name
    record_name  = var.pattern == "dns" ? "${var.dns_record}.${var.dns_name}" : null
    dns_ttl      = var.dns_ttl
    app_unit     = var.app_unit
    extra_config = var.extra_config
  })

  user_data = [
    for s in local.servers : templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
      server         = s.name
      cluster        = var.name
      config_b64     = base64encode(local.baton_toml)
      secret         = google_secret_manager_secret.cluster_key.id
      package_url    = var.package_url
      package_sha256 = var.package_sha256 == null ? "" : var.package_sha256
      extra_commands = var.extra_cloud_init
    })
  ]
}

# ------------------------------------------------------------------------------ identity and role

resource "google_service_account" "server" {
  project      = var.project
  account_id   = "${var.name}-baton"
  display_name = "Baton servers of cluster ${var.name}"
}

resource "google_project_iam_custom_role" "baton" {
  project     = var.project
  role_id     = "baton_${replace(var.name, "-", "_")}"
  title       = "Baton cluster ${var.name}"
  description = "What the Google Cloud kinds of Baton cluster ${var.name} call (baton cloud iam-policy --cloud gcp)."
  stage       = "GA"
  permissions = local.role_permissions
}

resource "google_project_iam_member" "baton" {
  project = var.project
  role    = google_project_iam_custom_role.baton.name
  member  = "serviceAccount:${google_service_account.server.email}"
}

# ------------------------------------------------------------------------------ the cluster key

resource "random_password" "cluster_key" {
  # 64 characters: Baton needs at least 32 bytes and uses the text as it is.
  length  = 64
  special = false
}

resource "google_secret_manager_secret" "cluster_key" {
  #checkov:skip=CKV_GCP_128:The cluster key is small and encrypted by Google's default keys; a customer-managed key would be the project owner's choice, not the module's.
  project   = var.project
  secret_id = "${var.name}-baton-cluster-key"
  labels    = local.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "cluster_key" {
  secret      = google_secret_manager_secret.cluster_key.id
  secret_data = random_password.cluster_key.result
}

resource "google_secret_manager_secret_iam_member" "server" {
  project   = var.project
  secret_id = google_secret_manager_secret.cluster_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.server.email}"
}

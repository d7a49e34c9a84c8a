resource "google_compute_network" "this" {
  project                 = var.project
  name                    = local.network_name
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "servers" {
  #checkov:skip=CKV_GCP_26:Flow logs belong to the network's owner and cost per GB; enable them on the subnetwork when the organisation requires them.
  project                  = var.project
  name                     = "${var.name}-servers"
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true
}

# Cloud NAT: the servers have no external address; they reach the package through it.
resource "google_compute_router" "this" {
  project = var.project
  name    = "${var.name}-baton"
  region  = var.region
  network = google_compute_network.this.id
}

resource "google_compute_router_nat" "this" {
  project                            = var.project
  name                               = "${var.name}-baton"
  router                             = google_compute_router.this.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"
}

locals {
  firewall = concat(
    [
      { name = "heartbeat", protocol = "udp", ports = ["7421"], from = [var.subnet_cidr] },
      { name = "api", protocol = "tcp", ports = ["7420"], from = concat([var.subnet_cidr], var.admin_cidrs) },
      { name = "mirror", protocol = "tcp", ports = ["7790"], from = [var.subnet_cidr] },
    ],
    length(var.service_ports) == 0 ? [] : [
      { name = "service", protocol = "tcp", ports = [for p in var.service_ports : tostring(p)], from = local.client_cidrs },
    ],
    # Google's health checkers.
    var.pattern != "lb-probe" ? [] : [
      { name = "health-check", protocol = "tcp", ports = [tostring(var.probe_port)], from = ["35.191.0.0/16", "130.211.0.0/22"] },
    ],
  )
}

resource "google_compute_firewall" "ingress" {
  for_each      = { for r in local.firewall : r.name => r }
  project       = var.project
  name          = "${var.name}-baton-${each.key}"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = each.value.from
  target_tags   = [local.tag]

  allow {
    protocol = each.value.protocol
    ports    = each.value.ports
  }
}

# ------------------------------------------------------------------------------ patterns

resource "google_dns_managed_zone" "this" {
  #checkov:skip=CKV_GCP_16:DNSSEC is for public zones; this is a private zone of the cluster's network.
  count       = var.pattern == "dns" ? 1 : 0
  project     = var.project
  name        = local.zone_name
  dns_name    = var.dns_name
  description = "Baton cluster ${var.name}"
  visibility  = "private"
  labels      = local.labels

  private_visibility_config {
    networks {
      network_url = google_compute_network.this.id
    }
  }
}

resource "google_compute_instance_group" "servers" {
  for_each  = var.pattern == "lb-probe" ? toset(distinct([for s in local.servers : s.zone])) : toset([])
  project   = var.project
  name      = "${var.name}-baton-${each.value}"
  zone      = each.value
  instances = [for i, s in local.servers : google_compute_instance.server[i].self_link if s.zone == each.value]
}

resource "google_compute_region_health_check" "baton" {
  count               = var.pattern == "lb-probe" ? 1 : 0
  project             = var.project
  name                = "${var.name}-baton"
  region              = var.region
  check_interval_sec  = 2
  timeout_sec         = 2
  healthy_threshold   = 2
  unhealthy_threshold = 2

  tcp_health_check {
    port = var.probe_port
  }
}

resource "google_compute_region_backend_service" "this" {
  count                 = var.pattern == "lb-probe" ? 1 : 0
  project               = var.project
  name                  = local.backend_name
  region                = var.region
  load_balancing_scheme = "INTERNAL"
  protocol              = "TCP"
  health_checks         = [google_compute_region_health_check.baton[0].id]

  dynamic "backend" {
    for_each = google_compute_instance_group.servers
    content {
      group          = backend.value.id
      balancing_mode = "CONNECTION"
    }
  }
}

resource "google_compute_forwarding_rule" "this" {
  count                 = var.pattern == "lb-probe" ? 1 : 0
  project               = var.project
  name                  = "${var.name}-baton"
  region                = var.region
  load_balancing_scheme = "INTERNAL"
  backend_service       = google_compute_region_backend_service.this[0].id
  network               = google_compute_network.this.id
  subnetwork            = google_compute_subnetwork.servers.id
  ip_protocol           = "TCP"
  ports                 = [for p in var.service_ports : tostring(p)]
}

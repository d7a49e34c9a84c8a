# Pattern 1: a virtual IP for clients in the same VPC. Three servers in three zones of a
# new VPC; the VIP 10.200.0.10 (outside the VPC) is routed by both route tables to the
# active server, which runs PostgreSQL.

module "cluster" {
  source = "../../modules/aws-cluster"

  name          = "orders"
  pattern       = "vip"
  server_count  = 3
  vpc_cidr      = "10.0.0.0/16"
  vip_address   = "10.200.0.10"
  service_ports = [5432]
  app_unit      = "postgresql.service"
  extra_cloud_init = [
    "DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql",
    "systemctl disable --now postgresql.service",
  ]

  package_url    = var.package_url
  package_sha256 = var.package_sha256
  alert_emails   = var.alert_emails
}

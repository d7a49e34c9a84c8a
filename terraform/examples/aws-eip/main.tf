# Pattern 2: an Elastic IP for clients on the Internet. Three servers in public subnets of
# a new VPC; the Elastic IP follows the active server, which runs nginx on port 443.

module "cluster" {
  source = "../../modules/aws-cluster"

  name          = "web"
  pattern       = "eip"
  server_count  = 3
  service_ports = [443]
  client_cidrs  = ["0.0.0.0/0"]
  app_unit      = "nginx.service"
  extra_cloud_init = [
    "DEBIAN_FRONTEND=noninteractive apt-get install -y nginx",
    "systemctl disable --now nginx.service",
  ]

  package_url    = var.package_url
  package_sha256 = var.package_sha256
  alert_emails   = var.alert_emails
}

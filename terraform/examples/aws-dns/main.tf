# Pattern 3: a Route 53 name for clients anywhere the zone resolves. Two servers and a
# DynamoDB witness (the third vote) in a new VPC; db.orders.internal in a private hosted
# zone holds the active server's address. A one-second heartbeat keeps the witness's
# request cost low (the README's cost section).

module "cluster" {
  source = "../../modules/aws-cluster"

  name               = "ledger"
  pattern            = "dns"
  server_count       = 2
  witness            = "dynamodb"
  heartbeat_interval = "1s"
  heartbeat_timeout  = "5s"
  dns_zone_name      = "orders.internal"
  dns_record_name    = "db.orders.internal."
  dns_ttl            = 30
  service_ports      = [5432]
  key_store          = "ssm"

  package_url    = var.package_url
  package_sha256 = var.package_sha256
  alert_emails   = var.alert_emails
}

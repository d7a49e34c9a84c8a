data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Used only when availability_zones is empty, for a first try; the README tells production clusters to list their zones, which pins them.
  count = local.create_vpc && length(var.availability_zones) == 0 ? 1 : 0
  state = "available"
}

data "aws_vpc" "existing" {
  count = local.create_vpc ? 0 : 1
  id    = var.vpc_id
}

data "aws_subnet" "server" {
  count = local.create_vpc ? 0 : var.server_count
  id    = var.subnet_ids[count.index]
}

data "aws_ami" "debian" {
  count       = var.ami_id == null ? 1 : 0
  most_recent = true
  owners      = ["136693071363"] # Debian's AWS account

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

locals {
  region     = data.aws_region.current.name
  create_vpc = var.vpc_id == null
  vpc_id     = local.create_vpc ? aws_vpc.this[0].id : var.vpc_id
  vpc_cidr   = local.create_vpc ? var.vpc_cidr : data.aws_vpc.existing[0].cidr_block
  tags       = merge(var.tags, { "baton:cluster" = var.name })

  # Zones and subnets of the servers, in server order.
  region_zones = local.create_vpc && length(var.availability_zones) == 0 ? data.aws_availability_zones.available[0].names : var.availability_zones
  zones = local.create_vpc ? [
    for i in range(var.server_count) : local.region_zones[i % length(local.region_zones)]
  ] : [for s in data.aws_subnet.server : s.availability_zone]
  subnet_cidrs = local.create_vpc ? [
    for i in range(var.server_count) : cidrsubnet(var.vpc_cidr, 8, i + 1)
  ] : [for s in data.aws_subnet.server : s.cidr_block]
  subnet_ids = local.create_vpc ? aws_subnet.server[*].id : var.subnet_ids

  # The servers as baton.toml names them; each address is fixed (host_number of its
  # subnet), so the configuration is known before any instance exists and is the same on
  # every server.
  servers = [
    for i in range(var.server_count) : {
      name    = "node-${i + 1}"
      zone    = local.zones[i]
      address = cidrhost(local.subnet_cidrs[i], var.host_number)
    }
  ]

  ami_id      = var.ami_id != null ? var.ami_id : data.aws_ami.debian[0].id
  kms_key_arn = var.kms_key_arn != null ? var.kms_key_arn : aws_kms_key.cluster[0].arn

  # What the pattern's resource moves.
  vip_route_tables  = var.pattern != "vip" ? [] : (local.create_vpc ? concat(aws_route_table.private[*].id, aws_route_table.public[*].id) : var.route_table_ids)
  eip_allocation_id = var.pattern != "eip" ? null : (var.eip_allocation_id != null ? var.eip_allocation_id : aws_eip.service[0].allocation_id)
  dns_zone_id       = var.pattern != "dns" ? null : (var.dns_zone_id != null ? trimprefix(var.dns_zone_id, "/hostedzone/") : aws_route53_zone.private[0].zone_id)

  witness_bucket = var.witness == "s3" ? aws_s3_bucket.witness[0].bucket : null
  witness_key    = "baton/${var.name}.lease"
  witness_table  = var.witness == "dynamodb" ? aws_dynamodb_table.witness[0].name : null
  sns_topic_arn  = var.notifications ? aws_sns_topic.alerts[0].arn : null
  key_ref        = var.key_store == "secretsmanager" ? aws_secretsmanager_secret.key[0].arn : aws_ssm_parameter.key[0].name

  # /etc/baton/baton.toml, the same on every server.
  baton_toml = templatefile("${path.module}/templates/baton.toml.tftpl", {
    name               = var.name
    region             = local.region
    heartbeat_interval = var.heartbeat_interval
    heartbeat_timeout  = var.heartbeat_timeout
    admin_cidrs        = var.admin_cidrs
    servers            = local.servers
    witness            = var.witness
    witness_url        = var.witness_url
    witness_bucket     = local.witness_bucket
    witness_key        = local.witness_key
    witness_table      = local.witness_table
    group              = var.group_name
    pattern            = var.pattern
    vip_address        = var.vip_address
    vpc_id             = local.vpc_id
    route_tables       = local.vip_route_tables
    allocation_id      = local.eip_allocation_id
    dns_zone_id        = local.dns_zone_id
    dns_record_name    = var.dns_record_name
    dns_ttl            = var.dns_ttl
    app_unit           = var.app_unit
    sns_topic_arn      = local.sns_topic_arn
    metrics            = var.metrics
    metrics_namespace  = var.metrics_namespace
    extra_config       = var.extra_config
  })

  # The cloud-init user data of each server: no secret in it, only where to fetch the key.
  user_data = [
    for s in local.servers : templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
      server         = s.name
      cluster        = var.name
      region         = local.region
      config_b64     = base64encode(local.baton_toml)
      key_store      = var.key_store
      key_ref        = local.key_ref
      package_url    = var.package_url
      package_sha256 = var.package_sha256 == null ? "" : var.package_sha256
      extra_commands = var.extra_cloud_init
    })
  ]
}

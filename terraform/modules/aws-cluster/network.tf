# The VPC the module creates when vpc_id is null: one subnet per server (public for eip,
# private behind a NAT gateway for vip and dns), and one public subnet for the NAT gateway.

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11:Flow logs belong to the VPC's owner; this VPC is the module's convenience for trying a cluster, and a production cluster passes vpc_id of a VPC with its logging.
  count                = local.create_vpc ? 1 : 0
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = "${var.name}-baton" })
}

# No rule at all: nothing may use the default security group.
resource "aws_default_security_group" "this" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = local.tags
}

resource "aws_internet_gateway" "this" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = merge(local.tags, { Name = "${var.name}-baton" })
}

resource "aws_subnet" "server" {
  count                   = local.create_vpc ? var.server_count : 0
  vpc_id                  = aws_vpc.this[0].id
  cidr_block              = local.subnet_cidrs[count.index]
  availability_zone       = local.zones[count.index]
  map_public_ip_on_launch = false
  tags                    = merge(local.tags, { Name = "${var.name}-${local.servers[count.index].name}" })
}

resource "aws_subnet" "nat" {
  count                   = local.nat ? 1 : 0
  vpc_id                  = aws_vpc.this[0].id
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, 200)
  availability_zone       = local.zones[0]
  map_public_ip_on_launch = false
  tags                    = merge(local.tags, { Name = "${var.name}-nat" })
}

locals {
  # eip: the servers' subnets route to the Internet gateway; vip, dns: to the NAT gateway.
  nat = local.create_vpc && var.pattern != "eip" && var.nat_gateway
}

resource "aws_route_table" "public" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = merge(local.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_default" {
  count                  = local.create_vpc ? 1 : 0
  route_table_id         = aws_route_table.public[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

resource "aws_route_table" "private" {
  count  = local.create_vpc && var.pattern != "eip" ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = merge(local.tags, { Name = "${var.name}-private" })
}

resource "aws_eip" "nat" {
  count  = local.nat ? 1 : 0
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${var.name}-nat" })
}

resource "aws_nat_gateway" "this" {
  count         = local.nat ? 1 : 0
  allocation_id = aws_eip.nat[0].allocation_id
  subnet_id     = aws_subnet.nat[0].id
  tags          = merge(local.tags, { Name = "${var.name}-nat" })
  depends_on    = [aws_internet_gateway.this]
}

resource "aws_route" "private_default" {
  count                  = local.nat ? 1 : 0
  route_table_id         = aws_route_table.private[0].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[0].id
}

resource "aws_route_table_association" "server" {
  count          = local.create_vpc ? var.server_count : 0
  subnet_id      = aws_subnet.server[count.index].id
  route_table_id = var.pattern == "eip" ? aws_route_table.public[0].id : aws_route_table.private[0].id
}

resource "aws_route_table_association" "nat" {
  count          = local.nat ? 1 : 0
  subnet_id      = aws_subnet.nat[0].id
  route_table_id = aws_route_table.public[0].id
}

# ------------------------------------------------------------------------------ security group

resource "aws_security_group" "servers" {
  name        = "${var.name}-baton"
  description = "Baton servers of cluster ${var.name}: heartbeats, API, mirror, the service"
  vpc_id      = local.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-baton" })
}

resource "aws_vpc_security_group_ingress_rule" "heartbeat" {
  security_group_id            = aws_security_group.servers.id
  description                  = "Baton heartbeats between the servers (UDP 7421, every interconnect)"
  referenced_security_group_id = aws_security_group.servers.id
  ip_protocol                  = "udp"
  from_port                    = 7421
  to_port                      = 7421
}

resource "aws_vpc_security_group_ingress_rule" "api_servers" {
  security_group_id            = aws_security_group.servers.id
  description                  = "Baton API between the servers (TCP 7420)"
  referenced_security_group_id = aws_security_group.servers.id
  ip_protocol                  = "tcp"
  from_port                    = 7420
  to_port                      = 7420
}

resource "aws_vpc_security_group_ingress_rule" "api_admin" {
  for_each          = toset(var.admin_cidrs)
  security_group_id = aws_security_group.servers.id
  description       = "Baton API from operators (TCP 7420)"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 7420
  to_port           = 7420
}

resource "aws_vpc_security_group_ingress_rule" "mirror" {
  security_group_id            = aws_security_group.servers.id
  description                  = "Baton mirror disks between the servers (TCP 7790)"
  referenced_security_group_id = aws_security_group.servers.id
  ip_protocol                  = "tcp"
  from_port                    = 7790
  to_port                      = 7790
}

resource "aws_vpc_security_group_ingress_rule" "service" {
  for_each          = { for pair in setproduct(var.service_ports, local.client_cidrs) : "${pair[0]}-${pair[1]}" => pair }
  security_group_id = aws_security_group.servers.id
  description       = "The service (TCP ${each.value[0]}) from its clients"
  cidr_ipv4         = each.value[1]
  ip_protocol       = "tcp"
  from_port         = each.value[0]
  to_port           = each.value[0]
}

locals {
  client_cidrs = length(var.client_cidrs) > 0 ? var.client_cidrs : [local.vpc_cidr]
}

resource "aws_vpc_security_group_egress_rule" "cluster" {
  for_each                     = { heartbeat = ["udp", 7421], api = ["tcp", 7420], mirror = ["tcp", 7790] }
  security_group_id            = aws_security_group.servers.id
  description                  = "Baton ${each.key} to the other servers"
  referenced_security_group_id = aws_security_group.servers.id
  ip_protocol                  = each.value[0]
  from_port                    = each.value[1]
  to_port                      = each.value[1]
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.servers.id
  description       = "HTTPS to the AWS APIs (EC2, Route 53, S3, DynamoDB, SNS, CloudWatch, Secrets Manager), the package and the witness"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "http" {
  security_group_id = aws_security_group.servers.id
  description       = "HTTP to the Debian mirrors (apt's packages are signed; awscli at first boot)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

locals {
  witness_port = var.witness != "http" ? null : tonumber(try(
    regex("^https?://[^/:]+:([0-9]+)", var.witness_url)[0],
    startswith(var.witness_url, "https://") ? 443 : 80,
  ))
}

resource "aws_vpc_security_group_egress_rule" "witness" {
  count             = var.witness == "http" && local.witness_port != 443 ? 1 : 0
  security_group_id = aws_security_group.servers.id
  description       = "The HTTP witness (${var.witness_url})"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = local.witness_port
  to_port           = local.witness_port
}

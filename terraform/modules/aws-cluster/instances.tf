# The servers. Each boots with cloud-init (templates/cloud-init.yaml.tftpl): writes
# baton.toml and its server name, fetches the cluster key, installs the package and
# starts the agent.
#
# user_data and ami changes are ignored once a server exists: replacing every server of
# an HA cluster at once would stop the service. Roll a change (a new package_url, new
# configuration) one server at a time, standby first:
#   terraform apply -replace='module.cluster.aws_instance.server[1]'
# (docs/src/terraform.md, "Upgrading Baton").

resource "aws_instance" "server" {
  #checkov:skip=CKV_AWS_88:Only the eip pattern gives the servers a public address: the standby needs one to reach the EC2 API (its subnet routes to the Internet gateway, which carries the Elastic IP), and the security group admits only the service's ports.
  count                       = var.server_count
  ami                         = local.ami_id
  instance_type               = var.instance_type
  subnet_id                   = local.subnet_ids[count.index]
  private_ip                  = local.servers[count.index].address
  vpc_security_group_ids      = [aws_security_group.servers.id]
  iam_instance_profile        = aws_iam_instance_profile.server.name
  key_name                    = var.ssh_key_name
  associate_public_ip_address = var.pattern == "eip"
  # The VIP pattern delivers packets for an address the ENI does not own.
  source_dest_check = var.pattern != "vip"
  monitoring        = true
  ebs_optimized     = true
  user_data         = local.user_data[count.index]

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.root_volume_size
    encrypted   = true
    kms_key_id  = local.kms_key_arn
  }

  tags = merge(local.tags, { Name = "${var.name}-${local.servers[count.index].name}", "baton:server" = local.servers[count.index].name })

  lifecycle {
    ignore_changes = [ami, user_data]
  }

  # The key must be readable when the server boots.
  depends_on = [aws_iam_role_policy.bootstrap, aws_secretsmanager_secret_version.key, aws_ssm_parameter.key]
}

# pattern = "eip": the address that follows the active server.
resource "aws_eip" "service" {
  #checkov:skip=CKV2_AWS_19:Baton associates the Elastic IP with the active server at run time (aws-eip); Terraform must not attach it to one instance.
  count  = var.pattern == "eip" && var.eip_allocation_id == null ? 1 : 0
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${var.name}-service" })
}

# pattern = "dns" without dns_zone_id: a private zone in the VPC.
resource "aws_route53_zone" "private" {
  #checkov:skip=CKV2_AWS_38:DNSSEC signing does not apply to private hosted zones.
  #checkov:skip=CKV2_AWS_39:Query logging is for public hosted zones; private zones log through Resolver query logging, which belongs to the VPC's owner.
  count   = var.pattern == "dns" && var.dns_zone_id == null ? 1 : 0
  name    = var.dns_zone_name
  comment = "Baton cluster ${var.name}"

  vpc {
    vpc_id = local.vpc_id
  }

  tags = local.tags
}

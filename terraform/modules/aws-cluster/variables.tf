# ------------------------------------------------------------------------------ cluster

variable "name" {
  description = "Cluster name: Baton's [cluster] name and the prefix of every AWS name the module creates."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name))
    error_message = "name must be 2 to 32 lower-case letters, digits and '-', starting with a letter and not ending with '-' (it names the cluster, the IAM role and the buckets)."
  }
}

variable "pattern" {
  description = "How clients reach the active server: \"vip\" (a VIP outside the VPC routed to it by the route tables), \"eip\" (an Elastic IP associated with it) or \"dns\" (a Route 53 record holding its address)."
  type        = string

  validation {
    condition     = contains(["vip", "eip", "dns"], var.pattern)
    error_message = "pattern must be \"vip\", \"eip\" or \"dns\"."
  }
}

variable "server_count" {
  description = "Number of servers, spread over the availability zones. 3 (or 5) on their own; 2 only with a witness, which gives the third vote."
  type        = number
  default     = 3

  validation {
    condition     = contains([2, 3, 4, 5], var.server_count)
    error_message = "server_count must be 2, 3, 4 or 5."
  }

  validation {
    condition     = var.server_count % 2 == 1 || var.witness != "none"
    error_message = "an even number of servers needs a witness (witness = \"s3\", \"dynamodb\" or \"http\"): without it the survivors of a failure of half the servers have no majority and stop."
  }
}

variable "group_name" {
  description = "Name of the failover group the cluster runs."
  type        = string
  default     = "service"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,63}$", var.group_name)) && var.group_name != "local-server"
    error_message = "group_name must be 1 to 63 letters, digits, '.', '_' or '-' (and not local-server)."
  }
}

variable "app_unit" {
  description = "A systemd unit the group starts after its address (for example \"postgresql.service\"); null for none. The unit must be installed on every server (see extra_cloud_init)."
  type        = string
  default     = null

  validation {
    condition     = var.app_unit == null || can(regex("^[A-Za-z0-9@._:-]+\\.(service|target|socket|mount)$", var.app_unit))
    error_message = "app_unit must be a systemd unit name such as \"postgresql.service\"."
  }
}

variable "extra_config" {
  description = "TOML appended to the rendered baton.toml: more [[group.resource]] tables (they join the group), [[monitor]] tables, notification sinks."
  type        = string
  default     = ""
}

variable "heartbeat_interval" {
  description = "[heartbeat] interval. A cloud witness is asked about once per interval: see the cost section of the README."
  type        = string
  default     = "200ms"

  validation {
    condition     = can(regex("^[0-9]+(ms|s)$", var.heartbeat_interval))
    error_message = "heartbeat_interval must be a duration such as \"200ms\" or \"1s\"."
  }
}

variable "heartbeat_timeout" {
  description = "[heartbeat] timeout: a server silent this long is down (at least 3 x heartbeat_interval)."
  type        = string
  default     = "1s"

  validation {
    condition     = can(regex("^[0-9]+(ms|s)$", var.heartbeat_timeout))
    error_message = "heartbeat_timeout must be a duration such as \"1s\" or \"5s\"."
  }
}

# ------------------------------------------------------------------------------ package

variable "package_url" {
  description = "The baton Debian package each server installs at boot: an https:// URL or an s3://bucket/key object (the instance role may read it)."
  type        = string

  validation {
    condition     = can(regex("^(https://|s3://)[^ ]+\\.deb$", var.package_url))
    error_message = "package_url must be an https:// URL or an s3:// object of a .deb file."
  }
}

variable "package_sha256" {
  description = "SHA-256 of the package; the server refuses a download that does not match. Recommended."
  type        = string
  default     = null

  validation {
    condition     = var.package_sha256 == null || can(regex("^[0-9a-f]{64}$", var.package_sha256))
    error_message = "package_sha256 must be 64 lower-case hex digits."
  }
}

variable "extra_cloud_init" {
  description = "Shell commands run at boot before the agent starts (install the application, for example)."
  type        = list(string)
  default     = []
}

# ------------------------------------------------------------------------------ instances

variable "instance_type" {
  description = "EC2 instance type of the servers (x86_64: the package is amd64)."
  type        = string
  default     = "t3.small"
}

variable "ami_id" {
  description = "AMI of the servers; null for the newest official Debian 12 (amd64) image. Debian or Ubuntu with cloud-init and apt."
  type        = string
  default     = null
}

variable "root_volume_size" {
  description = "Root volume size in GiB (gp3, encrypted with the cluster's KMS key)."
  type        = number
  default     = 16

  validation {
    condition     = var.root_volume_size >= 8
    error_message = "root_volume_size must be at least 8 GiB."
  }
}

variable "ssh_key_name" {
  description = "EC2 key pair for SSH; null for none (use SSM Session Manager or the serial console)."
  type        = string
  default     = null
}

# ------------------------------------------------------------------------------ network

variable "vpc_id" {
  description = "An existing VPC; null to create one (vpc_cidr, one subnet per server, an Internet gateway and, for vip and dns, a NAT gateway)."
  type        = string
  default     = null
}

variable "vpc_cidr" {
  description = "CIDR of the VPC the module creates (vpc_id = null)."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be an IPv4 CIDR block such as \"10.0.0.0/16\"."
  }
}

variable "subnet_ids" {
  description = "With vpc_id: one subnet per server, in different availability zones (public subnets for eip). Server i gets host host_number of subnet i."
  type        = list(string)
  default     = []

  validation {
    condition     = var.vpc_id == null || (length(var.subnet_ids) == var.server_count && length(distinct(var.subnet_ids)) == length(var.subnet_ids))
    error_message = "with vpc_id, subnet_ids must list server_count different subnets, one per server."
  }
}

variable "availability_zones" {
  description = "Without vpc_id: the zones of the servers' subnets, in order. Empty takes the region's first ones, for a first try: list them in production, so that a zone AWS adds never moves a server."
  type        = list(string)
  default     = []
}

variable "host_number" {
  description = "Each server's private address is this host number in its subnet (cidrhost), so the configuration is known before the instances exist."
  type        = number
  default     = 10

  validation {
    condition     = var.host_number >= 4 && var.host_number <= 250
    error_message = "host_number must be 4 to 250 (AWS reserves the first four addresses of a subnet)."
  }
}

variable "nat_gateway" {
  description = "Without vpc_id, for vip and dns: create a NAT gateway so that the servers in private subnets reach the AWS APIs and the package."
  type        = bool
  default     = true
}

variable "client_cidrs" {
  description = "Networks allowed to reach service_ports; empty for the VPC's own CIDR."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.client_cidrs : can(cidrhost(c, 0))])
    error_message = "client_cidrs must be IPv4 CIDR blocks."
  }
}

variable "service_ports" {
  description = "TCP ports of the application, opened to client_cidrs on every server."
  type        = list(number)
  default     = []

  validation {
    condition     = alltrue([for p in var.service_ports : p >= 1 && p <= 65535 && !contains([7420, 7421, 7790], p)])
    error_message = "service_ports must be 1 to 65535 and not Baton's own ports (7420 API, 7421 heartbeats, 7790 mirror)."
  }
}

variable "admin_cidrs" {
  description = "Networks allowed to reach the agents' API (TCP 7420) besides the servers: where operators run baton status."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "admin_cidrs must be IPv4 CIDR blocks, and not 0.0.0.0/0."
  }
}

# ------------------------------------------------------------------------------ patterns

variable "vip_address" {
  description = "pattern = \"vip\": the virtual IP, outside every CIDR block of the VPC (AWS ignores /32 routes inside it)."
  type        = string
  default     = null

  validation {
    condition     = var.pattern != "vip" || can(regex("^([0-9]{1,3}\\.){3}[0-9]{1,3}$", var.vip_address))
    error_message = "pattern \"vip\" needs vip_address, an IPv4 address outside the VPC's CIDR blocks."
  }
}

variable "route_table_ids" {
  description = "pattern = \"vip\" with vpc_id: the route tables of the clients' subnets, whose VIP/32 route follows the active server (Baton creates the route where it is missing)."
  type        = list(string)
  default     = []

  validation {
    condition     = var.pattern != "vip" || var.vpc_id == null || length(var.route_table_ids) > 0
    error_message = "pattern \"vip\" in an existing VPC needs route_table_ids: the route tables of the clients' subnets."
  }
}

variable "eip_allocation_id" {
  description = "pattern = \"eip\": an existing Elastic IP's allocation ID; null to allocate one."
  type        = string
  default     = null

  validation {
    condition     = var.eip_allocation_id == null || can(regex("^eipalloc-[0-9a-f]+$", var.eip_allocation_id))
    error_message = "eip_allocation_id must look like eipalloc-0123456789abcdef0."
  }
}

variable "dns_record_name" {
  description = "pattern = \"dns\": the record's fully qualified name, lower case, with the trailing dot (\"db.orders.internal.\")."
  type        = string
  default     = null

  validation {
    condition     = var.pattern != "dns" || can(regex("^([a-z0-9_-]+\\.)+$", var.dns_record_name))
    error_message = "pattern \"dns\" needs dns_record_name, a lower-case name with its trailing dot, such as \"db.orders.internal.\"."
  }
}

variable "dns_zone_id" {
  description = "pattern = \"dns\": the hosted zone of dns_record_name; null to create a private zone named dns_zone_name in the VPC."
  type        = string
  default     = null

  validation {
    condition     = var.pattern != "dns" || var.dns_zone_id != null || var.dns_zone_name != null
    error_message = "pattern \"dns\" needs dns_zone_id (an existing hosted zone) or dns_zone_name (a private zone to create)."
  }
}

variable "dns_zone_name" {
  description = "pattern = \"dns\" without dns_zone_id: the private hosted zone to create (\"orders.internal\"); dns_record_name must lie in it."
  type        = string
  default     = null

  validation {
    condition     = var.dns_zone_name == null || var.dns_record_name == null || endswith(coalesce(var.dns_record_name, "-"), ".${trimsuffix(coalesce(var.dns_zone_name, "-"), ".")}.")
    error_message = "dns_record_name must lie in dns_zone_name (db.orders.internal. in orders.internal)."
  }
}

variable "dns_ttl" {
  description = "pattern = \"dns\": TTL of the record in seconds; clients may keep the old address this long after a failover."
  type        = number
  default     = 60

  validation {
    condition     = var.dns_ttl >= 1 && var.dns_ttl <= 86400
    error_message = "dns_ttl must be 1 to 86400 seconds."
  }
}

# ------------------------------------------------------------------------------ quorum, alerts, metrics

variable "witness" {
  description = "The extra quorum vote: \"none\", \"s3\" (a lease object in a bucket the module creates), \"dynamodb\" (an item in a table it creates) or \"http\" (a baton witness at witness_url)."
  type        = string
  default     = "none"

  validation {
    condition     = contains(["none", "s3", "dynamodb", "http"], var.witness)
    error_message = "witness must be \"none\", \"s3\", \"dynamodb\" or \"http\"."
  }
}

variable "witness_url" {
  description = "witness = \"http\": the URL of a baton witness (baton-witness.service) reachable from every server, in another zone."
  type        = string
  default     = null

  validation {
    condition     = var.witness != "http" || can(regex("^https?://[^ ]+$", var.witness_url))
    error_message = "witness \"http\" needs witness_url, http://HOST:PORT or https://HOST:PORT."
  }
}

variable "alert_emails" {
  description = "E-mail addresses subscribed to the cluster's SNS topic (each confirms by mail). The topic is created when notifications is true."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alert_emails : can(regex("^[^@ ]+@[^@ ]+$", e))])
    error_message = "alert_emails must be e-mail addresses."
  }
}

variable "notifications" {
  description = "Create an SNS topic for Baton's events ([notify.sns], warnings and worse) and subscribe alert_emails."
  type        = bool
  default     = true
}

variable "metrics" {
  description = "Send Baton's metrics to CloudWatch ([metrics.cloudwatch]) and create a dashboard of them."
  type        = bool
  default     = true
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the metrics."
  type        = string
  default     = "Baton"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/#:-]{1,255}$", var.metrics_namespace)) && !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must be a custom CloudWatch namespace (not AWS/...)."
  }
}

# ------------------------------------------------------------------------------ secrets

variable "key_store" {
  description = "Where the cluster key lives: \"secretsmanager\" or \"ssm\" (a SecureString parameter). The servers fetch it at boot; it is never in user data."
  type        = string
  default     = "secretsmanager"

  validation {
    condition     = contains(["secretsmanager", "ssm"], var.key_store)
    error_message = "key_store must be \"secretsmanager\" or \"ssm\"."
  }
}

variable "kms_key_arn" {
  description = "A KMS key for the secret, the volumes, the topic and the witness; null to create one for the cluster (with rotation)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

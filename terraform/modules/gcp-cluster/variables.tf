variable "name" {
  description = "Cluster name: Baton's [cluster] name and the prefix of every Google Cloud name the module creates."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,18}[a-z0-9]$", var.name))
    error_message = "name must be 2 to 20 lower-case letters, digits and '-', starting with a letter (service account IDs are short)."
  }
}

variable "project" {
  description = "The project of everything the module creates."
  type        = string
}

variable "region" {
  description = "Region of the cluster's subnetwork (and of the load balancer)."
  type        = string
}

variable "zones" {
  description = "Zones of the servers, in turn (in region)."
  type        = list(string)

  validation {
    condition     = length(var.zones) > 0
    error_message = "zones must name at least one zone."
  }
}

variable "pattern" {
  description = "How clients reach the active server: \"dns\" (an A record in a private Cloud DNS zone), \"vip\" (a VPC route for a VIP to the active instance) or \"lb-probe\" (an internal passthrough load balancer whose health check only the active server passes)."
  type        = string

  validation {
    condition     = contains(["dns", "vip", "lb-probe"], var.pattern)
    error_message = "pattern must be \"dns\", \"vip\" or \"lb-probe\"."
  }
}

variable "server_count" {
  description = "Number of servers, spread over the zones. 3 (or 5); 2 only with an HTTP witness."
  type        = number
  default     = 3

  validation {
    condition     = contains([2, 3, 4, 5], var.server_count)
    error_message = "server_count must be 2, 3, 4 or 5."
  }

  validation {
    condition     = var.server_count % 2 == 1 || var.witness_url != null
    error_message = "an even number of servers needs a witness (witness_url): without it the survivors of a failure of half the servers have no majority and stop."
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
  description = "A systemd unit the group starts (for example \"postgresql.service\"); null for none."
  type        = string
  default     = null

  validation {
    condition     = var.app_unit == null || can(regex("^[A-Za-z0-9@._:-]+\\.(service|target|socket|mount)$", var.app_unit))
    error_message = "app_unit must be a systemd unit name such as \"postgresql.service\"."
  }
}

variable "extra_config" {
  description = "TOML appended to the rendered baton.toml (more resources for the group, monitors, notification sinks)."
  type        = string
  default     = ""
}

variable "extra_cloud_init" {
  description = "Shell commands run at boot before the agent starts (install the application, for example)."
  type        = list(string)
  default     = []
}

variable "witness_url" {
  description = "A baton witness (baton-witness.service) reachable from every server; null for none."
  type        = string
  default     = null

  validation {
    condition     = var.witness_url == null || can(regex("^https?://[^ ]+$", var.witness_url))
    error_message = "witness_url must be http://HOST:PORT or https://HOST:PORT."
  }
}

variable "package_url" {
  description = "The baton Debian package each server installs at boot (an https:// URL)."
  type        = string

  validation {
    condition     = can(regex("^https://[^ ]+\\.deb([?].*)?$", var.package_url))
    error_message = "package_url must be an https:// URL of a .deb file."
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

variable "machine_type" {
  description = "Machine type of the servers (x86_64)."
  type        = string
  default     = "e2-small"
}

variable "image" {
  description = "Boot image; it must run cloud-init (Ubuntu's images do; Debian's Compute Engine images do not)."
  type        = string
  default     = "ubuntu-os-cloud/ubuntu-2404-lts-amd64"
}

variable "subnet_cidr" {
  description = "CIDR of the subnetwork the module creates for the servers."
  type        = string
  default     = "10.0.1.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be an IPv4 CIDR block."
  }
}

variable "host_number" {
  description = "Server i gets host host_number + i of the subnetwork."
  type        = number
  default     = 10

  validation {
    condition     = var.host_number >= 2 && var.host_number <= 240
    error_message = "host_number must be 2 to 240 (Google reserves the first two addresses)."
  }
}

variable "client_cidrs" {
  description = "Networks allowed to reach service_ports; empty for the subnetwork."
  type        = list(string)
  default     = []
}

variable "service_ports" {
  description = "TCP ports of the application (and of the load balancer's forwarding rule)."
  type        = list(number)
  default     = []

  validation {
    condition     = alltrue([for p in var.service_ports : p >= 1 && p <= 65535 && !contains([7420, 7421, 7790], p)])
    error_message = "service_ports must be 1 to 65535 and not Baton's own ports (7420, 7421, 7790)."
  }

  validation {
    condition     = var.pattern != "lb-probe" || length(var.service_ports) > 0
    error_message = "pattern \"lb-probe\" needs service_ports: the load balancer forwards those ports."
  }
}

variable "admin_cidrs" {
  description = "Networks allowed to reach the agents' API (TCP 7420) besides the servers."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "admin_cidrs must be IPv4 CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "probe_port" {
  description = "pattern = \"lb-probe\": the port the health check probes and the active server answers."
  type        = number
  default     = 7080
}

variable "vip_address" {
  description = "pattern = \"vip\": the VIP, outside every subnetwork of the network."
  type        = string
  default     = null

  validation {
    condition     = var.pattern != "vip" || can(regex("^([0-9]{1,3}\\.){3}[0-9]{1,3}$", var.vip_address))
    error_message = "pattern \"vip\" needs vip_address, an IPv4 address outside the subnetworks."
  }
}

variable "dns_name" {
  description = "pattern = \"dns\": the private zone's DNS name, with its trailing dot (\"orders.internal.\")."
  type        = string
  default     = null

  validation {
    condition     = var.pattern != "dns" || can(regex("^([a-z0-9-]+\\.)+$", var.dns_name))
    error_message = "pattern \"dns\" needs dns_name, a lower-case name with its trailing dot such as \"orders.internal.\"."
  }
}

variable "dns_record" {
  description = "pattern = \"dns\": the record's first label (\"db\" for db.orders.internal.)."
  type        = string
  default     = "db"
}

variable "dns_ttl" {
  description = "pattern = \"dns\": TTL of the record in seconds."
  type        = number
  default     = 30
}

variable "labels" {
  description = "Labels added to every resource the module creates that takes them."
  type        = map(string)
  default     = {}
}

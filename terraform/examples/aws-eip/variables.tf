variable "region" {
  description = "AWS region of the cluster."
  type        = string
  default     = "us-east-1"
}

variable "package_url" {
  description = "The baton .deb the servers install (https:// or s3://), built by packaging/deb/build.sh."
  type        = string
}

variable "package_sha256" {
  description = "SHA-256 of the package (sha256sum baton_*.deb)."
  type        = string
  default     = null
}

variable "alert_emails" {
  description = "Who gets Baton's warnings by mail."
  type        = list(string)
  default     = []
}

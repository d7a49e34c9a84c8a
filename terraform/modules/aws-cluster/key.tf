# The cluster key (it authenticates heartbeats and derives the API tokens) and the KMS key
# that encrypts it, the volumes, the topic and the witness. The key is generated here, kept
# in Secrets Manager or SSM Parameter Store, and fetched by each server at boot with its
# instance role: it is never in user data. It is in the Terraform state too (as every
# generated secret is): keep the state encrypted and private.

resource "aws_kms_key" "cluster" {
  count                   = var.kms_key_arn == null ? 1 : 0
  description             = "Baton cluster ${var.name}: cluster key, volumes, alerts, witness"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # The account administers the key through IAM (the default key policy).
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
    ]
  })
  tags = local.tags
}

resource "aws_kms_alias" "cluster" {
  count         = var.kms_key_arn == null ? 1 : 0
  name          = "alias/baton-${var.name}"
  target_key_id = aws_kms_key.cluster[0].key_id
}

resource "random_password" "cluster_key" {
  # 64 characters: Baton needs at least 32 bytes and uses the text as it is.
  length  = 64
  special = false
}

resource "aws_secretsmanager_secret" "key" {
  #checkov:skip=CKV2_AWS_57:Rotating the cluster key is Baton's own procedure (accept_key_files on every server, then the new key_file; docs/src/operations.md), not a Lambda's.
  count                   = var.key_store == "secretsmanager" ? 1 : 0
  name                    = "baton/${var.name}/cluster-key"
  description             = "Baton cluster ${var.name}: the cluster key (heartbeats, API tokens)"
  kms_key_id              = local.kms_key_arn
  recovery_window_in_days = 7
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "key" {
  count         = var.key_store == "secretsmanager" ? 1 : 0
  secret_id     = aws_secretsmanager_secret.key[0].id
  secret_string = random_password.cluster_key.result
}

resource "aws_ssm_parameter" "key" {
  count       = var.key_store == "ssm" ? 1 : 0
  name        = "/baton/${var.name}/cluster-key"
  description = "Baton cluster ${var.name}: the cluster key (heartbeats, API tokens)"
  type        = "SecureString"
  key_id      = local.kms_key_arn
  value       = random_password.cluster_key.result
  tags        = local.tags
}

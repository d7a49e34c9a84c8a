# The cloud witness: one lease object (S3) or item (DynamoDB) per cluster
# (docs/src/witness.md). Each server reads and conditionally writes it about once per
# heartbeat interval: see the README for what that costs.

resource "aws_s3_bucket" "witness" {
  #checkov:skip=CKV_AWS_21:Versioning would keep one version per lease renewal (several a second); the lease needs none (docs/src/witness.md).
  #checkov:skip=CKV_AWS_18:Access logs would record every lease renewal (several a second) for no audit value; CloudTrail data events can be enabled by the account owner.
  #checkov:skip=CKV_AWS_144:A lease is meaningful in its region only; a replica would be a second, inconsistent lease.
  #checkov:skip=CKV2_AWS_62:Nothing reacts to lease writes; event notifications would only add cost.
  count         = var.witness == "s3" ? 1 : 0
  bucket_prefix = "${substr(var.name, 0, 20)}-baton-witness-" # at most 37 characters
  force_destroy = true
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "witness" {
  count                   = var.witness == "s3" ? 1 : 0
  bucket                  = aws_s3_bucket.witness[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "witness" {
  count  = var.witness == "s3" ? 1 : 0
  bucket = aws_s3_bucket.witness[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = local.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

# No expiry (a lease must never vanish under the cluster): only unfinished uploads go.
resource "aws_s3_bucket_lifecycle_configuration" "witness" {
  count  = var.witness == "s3" ? 1 : 0
  bucket = aws_s3_bucket.witness[0].id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

resource "aws_dynamodb_table" "witness" {
  count        = var.witness == "dynamodb" ? 1 : 0
  name         = "${var.name}-baton-witness"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"

  attribute {
    name = "pk"
    type = "S"
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = local.kms_key_arn
  }

  point_in_time_recovery {
    enabled = true
  }

  tags = local.tags
}

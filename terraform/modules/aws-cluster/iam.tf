# The servers' instance role. Three inline policies:
#   baton     what `baton cloud iam-policy` prints for the rendered baton.toml, statement
#             for statement: the pattern's EC2 or Route 53 calls, the S3 or DynamoDB
#             witness, SNS and CloudWatch (tests/terraform/check.py renders the
#             configuration and compares the two);
#   bootstrap what the boot script needs: the cluster key and the package;
#   services  the KMS key this module encrypts the witness and the topic with, which
#             baton.toml does not name (so `baton cloud iam-policy` cannot print it).

locals {
  ec2_arn = "arn:aws:ec2:${local.region}:*"
  dns_names = var.pattern != "dns" ? [] : sort([
    trimsuffix(var.dns_record_name, "."),
    "_baton.${trimsuffix(var.dns_record_name, ".")}",
  ])

  # Describe calls cannot be limited to resources in IAM; the aws-az monitor is always there.
  describe_actions = sort(concat(
    ["ec2:DescribeAvailabilityZones"],
    var.pattern == "vip" ? ["ec2:DescribeNetworkInterfaces", "ec2:DescribeRouteTables", "ec2:DescribeVpcs"] : [],
    var.pattern == "eip" ? ["ec2:DescribeAddresses"] : [],
  ))
  tag_condition = { "ForAllValues:StringLike" = { "aws:TagKeys" = ["baton:*"] } }

  # Statements are kept as JSON text until the end: the two branches of a conditional must
  # have one type, and statements of different shapes (with and without Condition) do not.
  baton_statements = concat(
    [jsonencode({ Sid = "BatonDescribe", Effect = "Allow", Action = local.describe_actions, Resource = "*" })],
    var.pattern != "vip" ? [] : [for st in [
      {
        Sid      = "BatonVipRoutes"
        Effect   = "Allow"
        Action   = ["ec2:ReplaceRoute", "ec2:CreateRoute"]
        Resource = sort([for rt in local.vip_route_tables : "${local.ec2_arn}:route-table/${rt}"])
      },
      {
        Sid       = "BatonEpochTags"
        Effect    = "Allow"
        Action    = ["ec2:CreateTags"]
        Resource  = sort([for rt in local.vip_route_tables : "${local.ec2_arn}:route-table/${rt}"])
        Condition = local.tag_condition
      },
    ] : jsonencode(st)],
    var.pattern != "eip" ? [] : [for st in [
      {
        # The ENIs are found through the instance metadata, hence any ENI of the region.
        Sid      = "BatonElasticIp"
        Effect   = "Allow"
        Action   = ["ec2:AssociateAddress", "ec2:DisassociateAddress"]
        Resource = ["${local.ec2_arn}:elastic-ip/${local.eip_allocation_id}", "${local.ec2_arn}:network-interface/*"]
      },
      {
        Sid       = "BatonEpochTags"
        Effect    = "Allow"
        Action    = ["ec2:CreateTags"]
        Resource  = ["${local.ec2_arn}:elastic-ip/${local.eip_allocation_id}"]
        Condition = local.tag_condition
      },
    ] : jsonencode(st)],
    var.pattern != "dns" ? [] : [for st in [
      {
        Sid      = "BatonDnsRead0"
        Effect   = "Allow"
        Action   = ["route53:GetHostedZone", "route53:ListResourceRecordSets"]
        Resource = "arn:aws:route53:::hostedzone/${local.dns_zone_id}"
      },
      {
        Sid      = "BatonDnsWrite0"
        Effect   = "Allow"
        Action   = ["route53:ChangeResourceRecordSets"]
        Resource = "arn:aws:route53:::hostedzone/${local.dns_zone_id}"
        Condition = {
          "ForAllValues:StringEquals" = {
            "route53:ChangeResourceRecordSetsNormalizedRecordNames" = local.dns_names
            "route53:ChangeResourceRecordSetsRecordTypes"           = ["A", "TXT"]
          }
        }
      },
      { Sid = "BatonDnsChanges", Effect = "Allow", Action = ["route53:GetChange"], Resource = "arn:aws:route53:::change/*" },
    ] : jsonencode(st)],
    # What the agent calls besides the kinds, in the order and shape iam-policy prints.
    var.witness != "s3" ? [] : [for st in [
      {
        Sid      = "BatonWitnessS3"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject"]
        Resource = "arn:aws:s3:::${local.witness_bucket}/${local.witness_key}"
      },
      {
        # Without it S3 answers a missing lease object with 403, not NoSuchKey.
        Sid       = "BatonWitnessS3List"
        Effect    = "Allow"
        Action    = ["s3:ListBucket"]
        Resource  = "arn:aws:s3:::${local.witness_bucket}"
        Condition = { StringEquals = { "s3:prefix" = [local.witness_key] } }
      },
    ] : jsonencode(st)],
    var.witness != "dynamodb" ? [] : [jsonencode({
      Sid       = "BatonWitnessDynamoDb"
      Effect    = "Allow"
      Action    = ["dynamodb:GetItem", "dynamodb:PutItem"]
      Resource  = "arn:aws:dynamodb:${local.region}:*:table/${local.witness_table}"
      Condition = { "ForAllValues:StringEquals" = { "dynamodb:LeadingKeys" = [var.name] } }
    })],
    !var.notifications ? [] : [jsonencode({
      Sid      = "BatonNotifySns"
      Effect   = "Allow"
      Action   = ["sns:Publish"]
      Resource = local.sns_topic_arn
    })],
    !var.metrics ? [] : [jsonencode({
      Sid       = "BatonMetricsCloudWatch"
      Effect    = "Allow"
      Action    = ["cloudwatch:PutMetricData"]
      Resource  = "*"
      Condition = { StringEquals = { "cloudwatch:namespace" = var.metrics_namespace } }
    })],
  )
  baton_policy = jsonencode({ Version = "2012-10-17", Statement = [for st in local.baton_statements : jsondecode(st)] })

  bootstrap_statements = concat(
    [for st in [
      var.key_store == "secretsmanager" ? {
        Sid      = "ClusterKey"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = [local.key_ref]
        } : {
        Sid      = "ClusterKey"
        Effect   = "Allow"
        Action   = ["ssm:GetParameter"]
        Resource = ["arn:aws:ssm:${local.region}:${data.aws_caller_identity.current.account_id}:parameter${local.key_ref}"]
      },
      {
        Sid      = "ClusterKeyDecrypt"
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [local.kms_key_arn]
        Condition = { StringEquals = { "kms:ViaService" = [
          var.key_store == "secretsmanager" ? "secretsmanager.${local.region}.amazonaws.com" : "ssm.${local.region}.amazonaws.com"
        ] } }
      },
    ] : jsonencode(st)],
    startswith(var.package_url, "s3://") ? [jsonencode({
      Sid      = "Package"
      Effect   = "Allow"
      Action   = ["s3:GetObject"]
      Resource = ["arn:aws:s3:::${trimprefix(var.package_url, "s3://")}"]
    })] : [],
  )

  services_statements = concat(
    var.witness != "s3" && var.witness != "dynamodb" && !var.notifications ? [] : [jsonencode({
      # The witness and the topic are encrypted with the cluster's KMS key.
      Sid      = "ServicesKms"
      Effect   = "Allow"
      Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
      Resource = [local.kms_key_arn]
      Condition = { StringEquals = { "kms:ViaService" = compact([
        var.witness == "s3" ? "s3.${local.region}.amazonaws.com" : "",
        var.witness == "dynamodb" ? "dynamodb.${local.region}.amazonaws.com" : "",
        var.notifications ? "sns.${local.region}.amazonaws.com" : "",
      ]) } }
    })],
  )
}

resource "aws_iam_role" "server" {
  name        = "${var.name}-baton-server"
  description = "Baton servers of cluster ${var.name}"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = local.tags
}

resource "aws_iam_instance_profile" "server" {
  name = "${var.name}-baton-server"
  role = aws_iam_role.server.name
  tags = local.tags
}

resource "aws_iam_role_policy" "baton" {
  #checkov:skip=CKV_AWS_355:The ec2:Describe* calls and cloudwatch:PutMetricData cannot be limited to resources in IAM (baton cloud iam-policy prints them on "*"); PutMetricData is limited to the cluster's namespace by the cloudwatch:namespace condition, every mutating EC2 action to its resources.
  #checkov:skip=CKV_AWS_290:The only write action on "*" is cloudwatch:PutMetricData, limited to the cluster's namespace by the cloudwatch:namespace condition (it has no resource type in IAM).
  name   = "baton"
  role   = aws_iam_role.server.id
  policy = local.baton_policy
}

resource "aws_iam_role_policy" "bootstrap" {
  name   = "baton-bootstrap"
  role   = aws_iam_role.server.id
  policy = jsonencode({ Version = "2012-10-17", Statement = [for st in local.bootstrap_statements : jsondecode(st)] })
}

resource "aws_iam_role_policy" "services" {
  count  = length(local.services_statements) > 0 ? 1 : 0
  name   = "baton-services"
  role   = aws_iam_role.server.id
  policy = jsonencode({ Version = "2012-10-17", Statement = [for st in local.services_statements : jsondecode(st)] })
}

# What repotalk needs from AWS whatever runs its containers (EKS or ECS): a VPC, Postgres (RDS),
# the Redis broker (ElastiCache), a KMS key, and the application secrets in Secrets Manager.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

################################################################################
# Network
################################################################################

module "vpc" {
  # checkov:skip=CKV_TF_1:Registry modules are pinned by version constraint; the registry does not serve them by commit hash.
  source  = "terraform-aws-modules/vpc/aws"
  version = "~> 6.0"

  name = var.name
  cidr = var.vpc_cidr
  azs  = var.azs

  private_subnets     = [for k, _ in var.azs : cidrsubnet(var.vpc_cidr, 4, k)]
  public_subnets      = [for k, _ in var.azs : cidrsubnet(var.vpc_cidr, 8, k + 48)]
  database_subnets    = [for k, _ in var.azs : cidrsubnet(var.vpc_cidr, 8, k + 52)]
  elasticache_subnets = [for k, _ in var.azs : cidrsubnet(var.vpc_cidr, 8, k + 56)]

  create_database_subnet_group    = true
  create_elasticache_subnet_group = false

  enable_nat_gateway   = true
  single_nat_gateway   = var.single_nat_gateway
  enable_dns_hostnames = true

  # Where the AWS Load Balancer Controller puts internet-facing and internal load balancers.
  public_subnet_tags  = { "kubernetes.io/role/elb" = 1 }
  private_subnet_tags = { "kubernetes.io/role/internal-elb" = 1 }

  enable_flow_log                                 = true
  create_flow_log_cloudwatch_log_group            = true
  create_flow_log_cloudwatch_iam_role             = true
  flow_log_cloudwatch_log_group_retention_in_days = var.log_retention_days
  flow_log_cloudwatch_log_group_kms_key_id        = aws_kms_key.this.arn

  tags = var.tags
}

################################################################################
# Encryption key: secrets and logs
################################################################################

data "aws_iam_policy_document" "kms" {
  # checkov:skip=CKV_AWS_111:This is a key policy: it is attached to this one key, where "*" means the key itself.
  # checkov:skip=CKV_AWS_356:This is a key policy: it is attached to this one key, where "*" means the key itself.
  # checkov:skip=CKV_AWS_109:Account-root administration of the key is AWS's default key policy; IAM policies then grant use.
  statement {
    sid       = "AccountAdministration"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${data.aws_region.current.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: application secrets and logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

################################################################################
# Postgres
################################################################################

resource "random_password" "db" {
  length  = 40
  special = false
  keepers = { version = var.db_password_version }
}

resource "aws_security_group" "db" {
  # checkov:skip=CKV2_AWS_5:Attached to the RDS instance through the rds module's vpc_security_group_ids, which checkov cannot follow offline.
  name        = "${var.name}-postgres"
  description = "Postgres: reachable from inside the VPC only"
  vpc_id      = module.vpc.vpc_id

  ingress {
    description = "Postgres from the VPC (pods, tasks)"
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    cidr_blocks = [module.vpc.vpc_cidr_block]
  }

  tags = var.tags
}

module "db" {
  # checkov:skip=CKV_TF_1:Registry modules are pinned by version constraint; the registry does not serve them by commit hash.
  source  = "terraform-aws-modules/rds/aws"
  version = "~> 7.0"

  identifier = var.name

  engine               = "postgres"
  engine_version       = "16"
  family               = "postgres16"
  major_engine_version = "16"
  instance_class       = var.db_instance_class

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_allocated_storage * 5
  storage_encrypted     = true

  db_name  = "repotalk"
  username = "repotalk"
  port     = 5432

  # The application takes one DATABASE_URL: Terraform writes the password into it (Secrets Manager),
  # and only as a write-only attribute into RDS. Rotation: README, "Rotating secrets".
  manage_master_user_password = false
  master_password_wo          = random_password.db.result
  master_password_wo_version  = var.db_password_version

  multi_az               = var.db_multi_az
  db_subnet_group_name   = module.vpc.database_subnet_group_name
  vpc_security_group_ids = [aws_security_group.db.id]

  maintenance_window      = "Mon:00:00-Mon:03:00"
  backup_window           = "03:00-06:00"
  backup_retention_period = 14

  enabled_cloudwatch_logs_exports        = ["postgresql", "upgrade"]
  create_cloudwatch_log_group            = true
  cloudwatch_log_group_retention_in_days = var.log_retention_days
  cloudwatch_log_group_kms_key_id        = aws_kms_key.this.arn

  performance_insights_enabled = true
  monitoring_interval          = 60
  create_monitoring_role       = true
  monitoring_role_name         = "${var.name}-rds-monitoring"

  deletion_protection              = var.deletion_protection
  skip_final_snapshot              = !var.deletion_protection
  final_snapshot_identifier_prefix = "${var.name}-final"

  parameters = [
    { name = "log_min_duration_statement", value = "500" },
    { name = "rds.force_ssl", value = "1" },
  ]

  tags = var.tags
}

################################################################################
# Redis (the Celery broker)
################################################################################

resource "random_password" "redis" {
  length  = 40
  special = false
}

module "redis" {
  # checkov:skip=CKV_TF_1:Registry modules are pinned by version constraint; the registry does not serve them by commit hash.
  source  = "terraform-aws-modules/elasticache/aws"
  version = "~> 1.6"

  replication_group_id = var.name
  description          = "repotalk broker (${var.name})"

  engine_version     = "7.1"
  node_type          = var.redis_node_type
  num_cache_clusters = 1 + var.redis_replicas

  automatic_failover_enabled = var.redis_replicas > 0
  multi_az_enabled           = var.redis_replicas > 0

  at_rest_encryption_enabled = true
  kms_key_arn                = aws_kms_key.this.arn
  transit_encryption_enabled = true
  auth_token                 = random_password.redis.result

  maintenance_window       = "sun:05:00-sun:07:00"
  snapshot_retention_limit = 3
  apply_immediately        = false

  vpc_id = module.vpc.vpc_id
  security_group_rules = {
    ingress_vpc = {
      description = "Redis from the VPC (pods, tasks, KEDA)"
      cidr_ipv4   = module.vpc.vpc_cidr_block
    }
  }

  subnet_group_name = var.name
  subnet_ids        = module.vpc.elasticache_subnets

  create_parameter_group = true
  parameter_group_name   = var.name
  parameter_group_family = "redis7"
  parameters = [
    # Queued events are the broker's whole purpose: never evict them to make room.
    { name = "maxmemory-policy", value = "noeviction" },
  ]

  tags = var.tags
}

################################################################################
# Application secrets (Secrets Manager)
################################################################################

resource "random_password" "secret_key" {
  length  = 64
  special = false
}

# One Fernet key per generation. ENCRYPTION_KEYS lists them newest first: the newest encrypts, all of
# them decrypt, so adding a generation rotates the key without losing what older keys encrypted.
resource "random_bytes" "fernet" {
  for_each = toset([for generation in var.encryption_key_generations : tostring(generation)])
  length   = 32
}

locals {
  redis_host   = module.redis.replication_group_primary_endpoint_address
  database_url = "postgresql+psycopg://repotalk:${random_password.db.result}@${module.db.db_instance_address}:5432/repotalk?sslmode=require"
  broker_url   = "rediss://:${random_password.redis.result}@${local.redis_host}:6379/0?ssl_cert_reqs=required"
  # Fernet keys are url-safe base64 of 32 random bytes.
  fernet_keys = [
    for generation in reverse(sort([for g in var.encryption_key_generations : format("%06d", g)])) :
    replace(replace(random_bytes.fernet[tostring(tonumber(generation))].base64, "+", "-"), "/", "_")
  ]
}

resource "aws_secretsmanager_secret" "app" {
  # checkov:skip=CKV2_AWS_57:The values are composed connection URLs that Terraform rotates together with RDS and ElastiCache (README, "Rotating secrets"); a rotation Lambda would break them.
  name                    = "${var.name}/app"
  description             = "repotalk: connection URLs and keys written by Terraform"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "app" {
  secret_id = aws_secretsmanager_secret.app.id
  secret_string = jsonencode({
    DATABASE_URL    = local.database_url
    BROKER_URL      = local.broker_url
    REDIS_PASSWORD  = random_password.redis.result
    SECRET_KEY      = random_password.secret_key.result
    ENCRYPTION_KEYS = join(",", local.fernet_keys)
  })
}

resource "aws_secretsmanager_secret" "external" {
  # checkov:skip=CKV2_AWS_57:Holds third-party credentials (Twilio, OpenAI) that are rotated at their issuer and written here by an operator.
  name                    = "${var.name}/external"
  description             = "repotalk: third-party credentials (Twilio, LLM providers), written by an operator"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = 7
  tags                    = var.tags
}

# Created with empty values so the first start finds every key; the real values are put by hand
# (README) and Terraform never overwrites them.
resource "aws_secretsmanager_secret_version" "external" {
  secret_id     = aws_secretsmanager_secret.external.id
  secret_string = jsonencode({ for key in var.external_secret_keys : key => "" })

  lifecycle {
    ignore_changes = [secret_string]
  }
}

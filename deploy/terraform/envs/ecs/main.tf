# repotalk on ECS Fargate: the shared platform (VPC, RDS, ElastiCache, KMS, Secrets Manager), an ECS
# cluster, one service per process (the gateway behind an HTTPS ALB, one per worker), a migration
# task definition, CloudWatch log groups and an ECR repository. Secrets reach the tasks from Secrets
# Manager through the task execution role; nothing secret is in a task definition.

locals {
  tags = {
    Application = "repotalk"
    Environment = var.name
    ManagedBy   = "terraform"
  }

  # Settings that are not secret (README "Settings"); the secrets come from Secrets Manager below.
  environment = [
    { name = "REPOTALK_ENV", value = "production" },
    { name = "LOG_FORMAT", value = "json" },
    { name = "HOST", value = "0.0.0.0" },
    { name = "PORT", value = "8000" },
    { name = "WORKER_HEALTH_PORT", value = "8001" },
    { name = "WORKER_POOL", value = "threads" },
    { name = "WORKER_CONCURRENCY", value = "4" },
    { name = "REPOTALK_DATA_DIR", value = "/var/lib/repotalk" },
    { name = "PUBLIC_BASE_URL", value = "https://${var.domain_name}" },
    { name = "TWILIO_STATUS_CALLBACK_URL", value = "https://${var.domain_name}/webhooks/twilio/status" },
    { name = "TWILIO_WHATSAPP_FROM", value = var.twilio_whatsapp_from },
    { name = "REPOS", value = var.repos },
  ]

  # Every key of both secrets becomes an environment variable of the same name.
  secrets = concat(
    [for key in module.platform.app_secret_keys : { name = key, valueFrom = "${module.platform.app_secret_arn}:${key}::" }],
    [for key in module.platform.external_secret_keys : { name = key, valueFrom = "${module.platform.external_secret_arn}:${key}::" }],
  )

  # One service per process. `data` is a writable volume at REPOTALK_DATA_DIR (code_search's index);
  # every task also gets a writable /tmp.
  services = {
    gateway            = { command = ["repotalk", "gateway"], cpu = 512, memory = 1024, port = 8000, data = true }
    worker-gateway     = { command = ["repotalk", "worker", "gateway"], cpu = 256, memory = 512, port = 8001, data = false }
    worker-processor   = { command = ["repotalk", "worker", "processor"], cpu = 512, memory = 1024, port = 8001, data = false }
    worker-code-search = { command = ["repotalk", "worker", "code_search"], cpu = 1024, memory = 2048, port = 8001, data = true }
    worker-ai-engine   = { command = ["repotalk", "worker", "ai_engine"], cpu = 512, memory = 1024, port = 8001, data = false }
    worker-analytics   = { command = ["repotalk", "worker", "analytics"], cpu = 256, memory = 512, port = 8001, data = false }
    # The scheduler: one task (a second one during a rollout only repeats an idempotent job).
    beat = { command = ["repotalk", "beat"], cpu = 256, memory = 512, port = 8001, data = false }
  }

  # code_search's HTTP API (search, repository admin, git webhook) on 8002 of every code_search task,
  # reached by the gateway as http://code-search:8002 through ECS Service Connect: the index lives with
  # code_search, one per task, and the gateway forwards those routes there.
  code_search_port = 8002
  service_environment = {
    gateway            = [{ name = "CODE_SEARCH_URL", value = "http://code-search:${local.code_search_port}" }]
    worker-code-search = [{ name = "CODE_SEARCH_PORT", value = tostring(local.code_search_port) }]
  }
  service_connect = {
    # The gateway is a client only (no service of its own in the namespace).
    gateway = { namespace = aws_service_discovery_http_namespace.repotalk.arn, service = null }
    worker-code-search = {
      namespace = aws_service_discovery_http_namespace.repotalk.arn
      service = [{
        port_name      = "search"
        discovery_name = "code-search"
        client_alias   = { port = local.code_search_port, dns_name = "code-search" }
      }]
    }
  }

}

module "platform" {
  source = "../../modules/platform"

  name                = var.name
  azs                 = [for zone in var.zones : "${var.region}${zone}"]
  db_instance_class   = var.db_instance_class
  redis_node_type     = var.redis_node_type
  log_retention_days  = var.log_retention_days
  deletion_protection = var.deletion_protection
  db_password_version = var.db_password_version
  tags                = local.tags

  encryption_key_generations = var.encryption_key_generations
}

################################################################################
# Image registry and logs
################################################################################

resource "aws_ecr_repository" "repotalk" {
  name                 = var.name
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = module.platform.kms_key_arn
  }
}

resource "aws_cloudwatch_log_group" "service" {
  for_each = merge(local.services, { migrate = {} })

  name              = "/ecs/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.platform.kms_key_arn
}

################################################################################
# Load balancer: HTTPS in, only the Twilio webhooks forwarded to the gateway
################################################################################

module "alb" {
  # checkov:skip=CKV_TF_1:Registry modules are pinned by version constraint; the registry does not serve them by commit hash.
  source  = "terraform-aws-modules/alb/aws"
  version = "~> 10.0"

  name                       = var.name
  load_balancer_type         = "application"
  vpc_id                     = module.platform.vpc_id
  subnets                    = module.platform.public_subnets
  enable_deletion_protection = var.deletion_protection
  drop_invalid_header_fields = true

  security_group_ingress_rules = {
    https = {
      description = "HTTPS from Twilio (anywhere)"
      from_port   = 443
      to_port     = 443
      ip_protocol = "tcp"
      cidr_ipv4   = "0.0.0.0/0"
    }
    http = {
      description = "HTTP, redirected to HTTPS"
      from_port   = 80
      to_port     = 80
      ip_protocol = "tcp"
      cidr_ipv4   = "0.0.0.0/0"
    }
  }
  security_group_egress_rules = {
    vpc = {
      description = "To the gateway tasks"
      ip_protocol = "-1"
      cidr_ipv4   = module.platform.vpc_cidr_block
    }
  }

  listeners = {
    http = {
      port     = 80
      protocol = "HTTP"
      redirect = {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
    https = {
      port            = 443
      protocol        = "HTTPS"
      certificate_arn = var.certificate_arn
      ssl_policy      = "ELBSecurityPolicy-TLS13-1-2-2021-06"

      # Anything but the webhooks: 404 (the admin, search and analytics APIs stay private).
      fixed_response = {
        content_type = "text/plain"
        message_body = "not found"
        status_code  = "404"
      }

      rules = {
        webhooks = {
          priority = 10
          actions  = [{ forward = { target_group_key = "gateway" } }]
          conditions = [{
            path_pattern = { values = ["/webhooks/twilio", "/webhooks/twilio/*"] }
          }]
        }
      }
    }
  }

  target_groups = {
    gateway = {
      protocol             = "HTTP"
      port                 = 8000
      target_type          = "ip"
      deregistration_delay = 10
      create_attachment    = false

      health_check = {
        enabled             = true
        path                = "/ready"
        port                = "traffic-port"
        protocol            = "HTTP"
        matcher             = "200"
        interval            = 15
        timeout             = 5
        healthy_threshold   = 2
        unhealthy_threshold = 3
      }
    }
  }

  tags = local.tags
}

################################################################################
# Cluster and services
################################################################################

module "ecs_cluster" {
  # checkov:skip=CKV_TF_1:Registry modules are pinned by version constraint; the registry does not serve them by commit hash.
  source  = "terraform-aws-modules/ecs/aws//modules/cluster"
  version = "~> 6.0"

  name = var.name

  setting = [{
    name  = "containerInsights"
    value = "enabled"
  }]

  cluster_capacity_providers = ["FARGATE"]
  default_capacity_provider_strategy = {
    FARGATE = {
      weight = 100
      base   = 1
    }
  }

  tags = local.tags
}

# Service Connect's namespace: how the gateway's tasks reach code_search's (http://code-search:8002).
resource "aws_service_discovery_http_namespace" "repotalk" {
  name        = "${var.name}.internal"
  description = "repotalk services (ECS Service Connect)"
  tags        = local.tags
}

module "service" {
  # checkov:skip=CKV_TF_1:Registry modules are pinned by version constraint; the registry does not serve them by commit hash.
  source   = "terraform-aws-modules/ecs/aws//modules/service"
  version  = "~> 6.0"
  for_each = local.services

  name        = "${var.name}-${each.key}"
  cluster_arn = module.ecs_cluster.arn

  cpu           = each.value.cpu
  memory        = each.value.memory
  desired_count = var.desired_counts[each.key]

  # Fargate gives each task its own ephemeral disk: code_search keeps its index there, per task.
  volume = merge({ tmp = {} }, each.value.data ? { data = {} } : {})

  container_definitions = {
    repotalk = {
      image                  = var.image
      command                = each.value.command
      essential              = true
      cpu                    = each.value.cpu
      memory                 = each.value.memory
      readonlyRootFilesystem = true
      user                   = "10001:10001"

      portMappings = concat(
        [{
          name          = each.value.port == 8000 ? "http" : "health"
          containerPort = each.value.port
          protocol      = "tcp"
        }],
        each.key == "worker-code-search" ? [{ name = "search", containerPort = local.code_search_port, protocol = "tcp" }] : [],
      )

      environment = concat(local.environment, lookup(local.service_environment, each.key, []))
      secrets     = local.secrets

      healthCheck = {
        # The gateway answers on $PORT, a worker on $WORKER_HEALTH_PORT: /health is "the process is alive".
        command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${each.value.port}/health', timeout=3)"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = each.key == "worker-code-search" ? 300 : 30
      }

      linuxParameters = {
        capabilities       = { drop = ["ALL"] }
        initProcessEnabled = true
      }

      mountPoints = concat(
        [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }],
        each.value.data ? [{ sourceVolume = "data", containerPath = "/var/lib/repotalk", readOnly = false }] : [],
      )

      enable_cloudwatch_logging = false
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service[each.key].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "repotalk"
        }
      }
    }
  }

  load_balancer = each.key == "gateway" ? {
    service = {
      target_group_arn = module.alb.target_groups["gateway"].arn
      container_name   = "repotalk"
      container_port   = 8000
    }
  } : {}

  service_connect_configuration = lookup(local.service_connect, each.key, null)

  subnet_ids = module.platform.private_subnets
  security_group_ingress_rules = merge(
    each.key == "gateway" ? {
      alb = {
        description                  = "Webhooks from the load balancer"
        from_port                    = 8000
        to_port                      = 8000
        ip_protocol                  = "tcp"
        referenced_security_group_id = module.alb.security_group_id
      }
    } : {},
    each.key == "worker-code-search" ? {
      code_search = {
        description = "code_search's HTTP API, forwarded by the gateway (Service Connect)"
        from_port   = local.code_search_port
        to_port     = local.code_search_port
        ip_protocol = "tcp"
        cidr_ipv4   = module.platform.vpc_cidr_block
      }
    } : {},
  )
  security_group_egress_rules = merge(each.key == "gateway" ? {
    code_search = {
      description = "code_search's HTTP API (Service Connect)"
      from_port   = local.code_search_port
      to_port     = local.code_search_port
      ip_protocol = "tcp"
      cidr_ipv4   = module.platform.vpc_cidr_block
    }
    } : {}, {
    https = {
      description = "Twilio, LLM APIs, git remotes, ECR, Secrets Manager, CloudWatch"
      from_port   = 443
      to_port     = 443
      ip_protocol = "tcp"
      cidr_ipv4   = "0.0.0.0/0"
    }
    postgres = {
      description = "RDS"
      from_port   = 5432
      to_port     = 5432
      ip_protocol = "tcp"
      cidr_ipv4   = module.platform.vpc_cidr_block
    }
    redis = {
      description = "ElastiCache"
      from_port   = 6379
      to_port     = 6379
      ip_protocol = "tcp"
      cidr_ipv4   = module.platform.vpc_cidr_block
    }
    dns = {
      description = "The VPC resolver"
      from_port   = 53
      to_port     = 53
      ip_protocol = "udp"
      cidr_ipv4   = module.platform.vpc_cidr_block
    }
  })

  # The task execution role reads exactly these two secrets and decrypts them with the platform key.
  task_exec_secret_arns = [module.platform.app_secret_arn, module.platform.external_secret_arn]
  task_exec_iam_statements = {
    kms = {
      actions   = ["kms:Decrypt"]
      resources = [module.platform.kms_key_arn]
    }
  }

  # Target tracking on CPU and memory (the module's default policies). Queue-length scaling is the
  # EKS path (KEDA); on ECS the workers scale on the CPU their queue keeps busy.
  enable_autoscaling       = true
  autoscaling_min_capacity = var.desired_counts[each.key]
  autoscaling_max_capacity = var.max_counts[each.key]

  tags = local.tags
}

# `repotalk migrate`, run once per release before the services roll (README): a task definition only.
module "migrate" {
  # checkov:skip=CKV_TF_1:Registry modules are pinned by version constraint; the registry does not serve them by commit hash.
  source  = "terraform-aws-modules/ecs/aws//modules/service"
  version = "~> 6.0"

  name           = "${var.name}-migrate"
  cluster_arn    = module.ecs_cluster.arn
  create_service = false

  cpu    = 256
  memory = 512
  volume = { tmp = {} }

  container_definitions = {
    repotalk = {
      image                  = var.image
      command                = ["repotalk", "migrate"]
      essential              = true
      readonlyRootFilesystem = true
      user                   = "10001:10001"
      environment            = local.environment
      secrets                = local.secrets
      linuxParameters        = { capabilities = { drop = ["ALL"] } }
      mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]

      enable_cloudwatch_logging = false
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["migrate"].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "repotalk"
        }
      }
    }
  }

  subnet_ids = module.platform.private_subnets
  security_group_egress_rules = {
    https = {
      description = "ECR, Secrets Manager, CloudWatch"
      from_port   = 443
      to_port     = 443
      ip_protocol = "tcp"
      cidr_ipv4   = "0.0.0.0/0"
    }
    postgres = {
      description = "RDS"
      from_port   = 5432
      to_port     = 5432
      ip_protocol = "tcp"
      cidr_ipv4   = module.platform.vpc_cidr_block
    }
    dns = {
      description = "The VPC resolver"
      from_port   = 53
      to_port     = 53
      ip_protocol = "udp"
      cidr_ipv4   = module.platform.vpc_cidr_block
    }
  }

  task_exec_secret_arns = [module.platform.app_secret_arn, module.platform.external_secret_arn]
  task_exec_iam_statements = {
    kms = {
      actions   = ["kms:Decrypt"]
      resources = [module.platform.kms_key_arn]
    }
  }

  tags = local.tags
}

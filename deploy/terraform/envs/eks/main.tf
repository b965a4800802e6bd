# repotalk on EKS: the shared platform (VPC, RDS, ElastiCache, KMS, Secrets Manager), an EKS cluster
# whose VPC CNI enforces NetworkPolicies, IAM roles for service accounts, the add-ons the eks overlay
# relies on (AWS Load Balancer Controller, External Secrets Operator, KEDA, CloudWatch agent), an ECR
# repository and the log groups. The application itself is deployed with `kubectl apply -k
# deploy/k8s/overlays/eks` once `k8s_cluster_env` below is written to the overlay (README).

locals {
  tags = {
    Application = "repotalk"
    Environment = var.name
    ManagedBy   = "terraform"
  }
  service_account = "${var.namespace}:repotalk"
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
# Cluster
################################################################################

module "eks" {
  # checkov:skip=CKV_TF_1:Registry modules are pinned by version constraint; the registry does not serve them by commit hash.
  source  = "terraform-aws-modules/eks/aws"
  version = "~> 21.0"

  name               = var.name
  kubernetes_version = var.kubernetes_version

  endpoint_public_access       = length(var.cluster_endpoint_public_access_cidrs) > 0
  endpoint_public_access_cidrs = var.cluster_endpoint_public_access_cidrs
  endpoint_private_access      = true

  enable_cluster_creator_admin_permissions = true

  enabled_log_types                      = ["api", "audit", "authenticator"]
  cloudwatch_log_group_retention_in_days = var.log_retention_days
  cloudwatch_log_group_kms_key_id        = module.platform.kms_key_arn

  addons = {
    coredns                = {}
    kube-proxy             = {}
    eks-pod-identity-agent = { before_compute = true }
    vpc-cni = {
      before_compute = true
      # The base's NetworkPolicies are only enforced when the VPC CNI's policy agent is on.
      configuration_values = jsonencode({ enableNetworkPolicy = "true" })
    }
    amazon-cloudwatch-observability = {
      service_account_role_arn = module.cloudwatch_irsa.arn
    }
  }

  vpc_id                   = module.platform.vpc_id
  subnet_ids               = module.platform.private_subnets
  control_plane_subnet_ids = module.platform.private_subnets

  eks_managed_node_groups = {
    default = {
      ami_type       = "AL2023_x86_64_STANDARD"
      instance_types = var.node_instance_types
      min_size       = var.node_min_size
      max_size       = var.node_max_size
      desired_size   = var.node_desired_size
    }
  }

  tags = local.tags
}

################################################################################
# IAM roles for service accounts
################################################################################

# The `repotalk` service account: External Secrets authenticates as it to read the two secrets.
module "app_irsa" {
  # checkov:skip=CKV_TF_1:Registry modules are pinned by version constraint; the registry does not serve them by commit hash.
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts"
  version = "~> 6.0"

  name = "${var.name}-app"

  attach_external_secrets_policy        = true
  external_secrets_secrets_manager_arns = [module.platform.app_secret_arn, module.platform.external_secret_arn]
  external_secrets_kms_key_arns         = [module.platform.kms_key_arn]

  oidc_providers = {
    this = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = [local.service_account]
    }
  }
}

module "load_balancer_controller_irsa" {
  # checkov:skip=CKV_TF_1:Registry modules are pinned by version constraint; the registry does not serve them by commit hash.
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts"
  version = "~> 6.0"

  name                                   = "${var.name}-load-balancer-controller"
  attach_load_balancer_controller_policy = true

  oidc_providers = {
    this = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["kube-system:aws-load-balancer-controller"]
    }
  }
}

module "cloudwatch_irsa" {
  # checkov:skip=CKV_TF_1:Registry modules are pinned by version constraint; the registry does not serve them by commit hash.
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts"
  version = "~> 6.0"

  name                                   = "${var.name}-cloudwatch-agent"
  attach_cloudwatch_observability_policy = true

  oidc_providers = {
    this = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["amazon-cloudwatch:cloudwatch-agent"]
    }
  }
}

################################################################################
# Logs: the CloudWatch agent ships container logs here (created first, with retention and KMS)
################################################################################

resource "aws_cloudwatch_log_group" "application" {
  name              = "/aws/containerinsights/${var.name}/application"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.platform.kms_key_arn
}

resource "aws_cloudwatch_log_group" "performance" {
  name              = "/aws/containerinsights/${var.name}/performance"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.platform.kms_key_arn
}

################################################################################
# Image registry
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

################################################################################
# Cluster add-ons the eks overlay relies on
################################################################################

resource "helm_release" "aws_load_balancer_controller" {
  name       = "aws-load-balancer-controller"
  namespace  = "kube-system"
  repository = "https://aws.github.io/eks-charts"
  chart      = "aws-load-balancer-controller"
  version    = var.chart_versions.aws_load_balancer_controller

  values = [yamlencode({
    clusterName = module.eks.cluster_name
    region      = var.region
    vpcId       = module.platform.vpc_id
    serviceAccount = {
      name        = "aws-load-balancer-controller"
      annotations = { "eks.amazonaws.com/role-arn" = module.load_balancer_controller_irsa.arn }
    }
  })]
}

resource "helm_release" "external_secrets" {
  name             = "external-secrets"
  namespace        = "external-secrets"
  create_namespace = true
  repository       = "https://charts.external-secrets.io"
  chart            = "external-secrets"
  version          = var.chart_versions.external_secrets

  values = [yamlencode({ installCRDs = true })]
}

resource "helm_release" "keda" {
  name             = "keda"
  namespace        = "keda"
  create_namespace = true
  repository       = "https://kedacore.github.io/charts"
  chart            = "keda"
  version          = var.chart_versions.keda
}

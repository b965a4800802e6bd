variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "zones" {
  description = "Availability zone letters in the region (subnets, database, cache)."
  type        = list(string)
  default     = ["a", "b", "c"]
}

variable "name" {
  description = "Name of the environment: prefix of every resource, and the EKS cluster's name."
  type        = string
  default     = "repotalk-eks"
}

variable "domain_name" {
  description = "Public host name of the webhook (the ALB answers it; point a DNS record at the ALB)."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for domain_name, in the same region (the ALB terminates TLS with it)."
  type        = string
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.33"
}

variable "node_instance_types" {
  description = "Instance types of the managed node group."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "node_min_size" {
  description = "Fewest nodes."
  type        = number
  default     = 2
}

variable "node_max_size" {
  description = "Most nodes."
  type        = number
  default     = 6
}

variable "node_desired_size" {
  description = "Nodes at creation."
  type        = number
  default     = 3
}

variable "cluster_endpoint_public_access_cidrs" {
  description = "Who may reach the Kubernetes API from the internet (an empty list makes it private)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "log_retention_days" {
  description = "How long CloudWatch keeps logs."
  type        = number
  default     = 365
}

variable "deletion_protection" {
  description = "Protect the database from deletion."
  type        = bool
  default     = true
}

variable "db_password_version" {
  description = "Increase to rotate the database password (README, Rotating secrets)."
  type        = number
  default     = 1
}

variable "namespace" {
  description = "Kubernetes namespace of repotalk (deploy/k8s sets `repotalk`)."
  type        = string
  default     = "repotalk"
}

variable "chart_versions" {
  description = "Helm chart versions of the cluster add-ons."
  type = object({
    aws_load_balancer_controller = string
    external_secrets             = string
    keda                         = string
  })
  default = {
    aws_load_balancer_controller = "1.13.4"
    external_secrets             = "0.19.2"
    keda                         = "2.17.2"
  }
}

variable "encryption_key_generations" {
  description = "Generations of the key that encrypts personal data: add the next number to rotate it (README, Rotating secrets)."
  type        = list(number)
  default     = [1]
}

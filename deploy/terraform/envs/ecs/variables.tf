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
  description = "Name of the environment: prefix of every resource."
  type        = string
  default     = "repotalk-ecs"
}

variable "domain_name" {
  description = "Public host name of the webhook (point a DNS record at the ALB: output alb_dns_name)."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for domain_name, in the same region (the ALB terminates TLS with it)."
  type        = string
}

variable "image" {
  description = "The repotalk image to run, with its tag (e.g. <account>.dkr.ecr.<region>.amazonaws.com/repotalk-ecs:0.1.0)."
  type        = string
}

variable "twilio_whatsapp_from" {
  description = "The WhatsApp sender replies come from (whatsapp:+E164)."
  type        = string
  default     = "whatsapp:+14155238886"
}

variable "repos" {
  description = "Repositories the code_search tasks index at start (REPOS: name=path-or-git-url,...)."
  type        = string
  default     = ""
}

variable "desired_counts" {
  description = "Tasks per service at creation (autoscaling moves them between min and max)."
  type        = map(number)
  default = {
    gateway            = 2
    worker-gateway     = 1
    worker-processor   = 1
    worker-code-search = 1
    worker-ai-engine   = 1
    worker-analytics   = 1
    beat               = 1
  }
}

variable "max_counts" {
  description = "Most tasks per service (CPU and memory target tracking)."
  type        = map(number)
  default = {
    gateway            = 10
    worker-gateway     = 10
    worker-processor   = 10
    worker-code-search = 4
    worker-ai-engine   = 10
    worker-analytics   = 5
    beat               = 1
  }
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
  description = "Protect the database and the load balancer from deletion."
  type        = bool
  default     = true
}

variable "db_password_version" {
  description = "Increase to rotate the database password (README, Rotating secrets)."
  type        = number
  default     = 1
}

variable "encryption_key_generations" {
  description = "Generations of the key that encrypts personal data: add the next number to rotate it (README, Rotating secrets)."
  type        = list(number)
  default     = [1]
}

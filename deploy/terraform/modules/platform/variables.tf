variable "name" {
  description = "Name prefix of every resource (e.g. repotalk-eks)."
  type        = string
}

variable "vpc_cidr" {
  description = "Address range of the VPC."
  type        = string
  default     = "10.0.0.0/16"
}

variable "azs" {
  description = "Availability zones (names) to spread subnets, the database and the cache over; named, so the set never changes under you."
  type        = list(string)
}

variable "single_nat_gateway" {
  description = "One NAT gateway for the whole VPC (cheaper) instead of one per zone (survives a zone outage)."
  type        = bool
  default     = false
}

variable "db_instance_class" {
  description = "RDS instance class of the Postgres database."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage" {
  description = "Initial storage of the database (GiB); it grows up to 5x on its own."
  type        = number
  default     = 20
}

variable "db_multi_az" {
  description = "Keep a standby database in a second zone."
  type        = bool
  default     = true
}

variable "db_password_version" {
  description = "Increase to write a new database password (rotation: see the README)."
  type        = number
  default     = 1
}

variable "redis_node_type" {
  description = "ElastiCache node type of the Redis broker."
  type        = string
  default     = "cache.t4g.small"
}

variable "redis_replicas" {
  description = "Read replicas of the broker; 1 or more enables automatic failover."
  type        = number
  default     = 1
}

variable "log_retention_days" {
  description = "How long CloudWatch keeps the logs."
  type        = number
  default     = 365
}

variable "deletion_protection" {
  description = "Refuse to delete the database (and keep a final snapshot when it is deleted)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "external_secret_keys" {
  description = "Keys of the operator-written secret (third-party credentials); each becomes an environment variable."
  type        = list(string)
  default     = ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY"]
}

variable "encryption_key_generations" {
  description = "Generations of the Fernet key that encrypts personal data; add one to rotate (README), drop old ones only when nothing they encrypted remains."
  type        = list(number)
  default     = [1]
}

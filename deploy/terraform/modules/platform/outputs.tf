output "vpc_id" {
  description = "The VPC."
  value       = module.vpc.vpc_id
}

output "vpc_cidr_block" {
  description = "The VPC's address range (the NetworkPolicies' and security groups' peer range)."
  value       = module.vpc.vpc_cidr_block
}

output "private_subnets" {
  description = "Private subnets (nodes, tasks)."
  value       = module.vpc.private_subnets
}

output "public_subnets" {
  description = "Public subnets (load balancers)."
  value       = module.vpc.public_subnets
}

output "kms_key_arn" {
  description = "The key that encrypts the secrets and the logs."
  value       = aws_kms_key.this.arn
}

output "db_address" {
  description = "Postgres host name."
  value       = module.db.db_instance_address
}

output "redis_address" {
  description = "Primary endpoint of the Redis broker."
  value       = local.redis_host
}

output "app_secret_arn" {
  description = "Secrets Manager secret written by Terraform."
  value       = aws_secretsmanager_secret.app.arn
}

output "app_secret_name" {
  description = "Name of the secret written by Terraform."
  value       = aws_secretsmanager_secret.app.name
}

output "external_secret_arn" {
  description = "Secrets Manager secret holding the third-party credentials."
  value       = aws_secretsmanager_secret.external.arn
}

output "external_secret_name" {
  description = "Name of the secret holding the third-party credentials."
  value       = aws_secretsmanager_secret.external.name
}

output "app_secret_keys" {
  description = "Keys of the Terraform-written secret; each becomes an environment variable."
  value       = ["DATABASE_URL", "BROKER_URL", "REDIS_PASSWORD", "SECRET_KEY", "ENCRYPTION_KEYS"]
}

output "external_secret_keys" {
  description = "Keys of the operator-written secret."
  value       = var.external_secret_keys
}

output "webhook_url" {
  description = "Set this as the WhatsApp sender's webhook (\"when a message comes in\", POST) in Twilio."
  value       = "https://${var.domain_name}/webhooks/twilio"
}

output "status_callback_url" {
  description = "Twilio status callback URL."
  value       = "https://${var.domain_name}/webhooks/twilio/status"
}

output "alb_dns_name" {
  description = "Point domain_name at this (CNAME, or a Route 53 alias)."
  value       = module.alb.dns_name
}

output "ecr_repository_url" {
  description = "Push the image here, then set var.image to <url>:<tag>."
  value       = aws_ecr_repository.repotalk.repository_url
}

output "cluster_name" {
  description = "The ECS cluster."
  value       = module.ecs_cluster.name
}

output "external_secret_name" {
  description = "Put the Twilio and LLM credentials in this Secrets Manager secret (README)."
  value       = module.platform.external_secret_name
}

output "app_secret_name" {
  description = "The secret Terraform writes (database and broker URLs, keys)."
  value       = module.platform.app_secret_name
}

output "log_groups" {
  description = "CloudWatch log group of each service."
  value       = { for key, group in aws_cloudwatch_log_group.service : key => group.name }
}

output "run_migration" {
  description = "Run the schema migration (once per release, before the services roll)."
  value = join(" ", [
    "aws ecs run-task --region ${var.region} --cluster ${module.ecs_cluster.name}",
    "--task-definition ${module.migrate.task_definition_family} --launch-type FARGATE",
    "--network-configuration 'awsvpcConfiguration={subnets=[${join(",", module.platform.private_subnets)}],securityGroups=[${module.migrate.security_group_id}],assignPublicIp=DISABLED}'",
  ])
}

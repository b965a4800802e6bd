output "webhook_url" {
  description = "Set this as the WhatsApp sender's webhook (\"when a message comes in\", POST) in Twilio."
  value       = "https://${var.domain_name}/webhooks/twilio"
}

output "status_callback_url" {
  description = "Twilio status callback URL."
  value       = "https://${var.domain_name}/webhooks/twilio/status"
}

output "cluster_name" {
  description = "The EKS cluster."
  value       = module.eks.cluster_name
}

output "configure_kubectl" {
  description = "Point kubectl at the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "ecr_repository_url" {
  description = "Push the image here; set it in the eks overlay with `kustomize edit set image`."
  value       = aws_ecr_repository.repotalk.repository_url
}

output "external_secret_name" {
  description = "Put the Twilio and LLM credentials in this Secrets Manager secret (README)."
  value       = module.platform.external_secret_name
}

output "app_secret_name" {
  description = "The secret Terraform writes (database and broker URLs, keys)."
  value       = module.platform.app_secret_name
}

output "log_group" {
  description = "Container logs (CloudWatch)."
  value       = aws_cloudwatch_log_group.application.name
}

output "k8s_cluster_env" {
  description = "Contents of deploy/k8s/overlays/eks/cluster.env for this environment."
  value       = <<-EOT
    HOSTNAME=${var.domain_name}
    PUBLIC_BASE_URL=https://${var.domain_name}
    TWILIO_STATUS_CALLBACK_URL=https://${var.domain_name}/webhooks/twilio/status
    CERTIFICATE_ARN=${var.certificate_arn}
    APP_ROLE_ARN=${module.app_irsa.arn}
    AWS_REGION=${var.region}
    VPC_CIDR=${module.platform.vpc_cidr_block}
    REDIS_ADDRESS=${module.platform.redis_address}:6379
    APP_SECRET_NAME=${module.platform.app_secret_name}
    EXTERNAL_SECRET_NAME=${module.platform.external_secret_name}
  EOT
}

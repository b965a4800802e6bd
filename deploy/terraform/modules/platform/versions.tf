terraform {
  # RDS module v7 writes the master password as a write-only attribute (Terraform >= 1.11).
  required_version = ">= 1.11.1"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.27"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6"
    }
  }
}

# Demo environment for the local stack: provider-free (Terraform 1.0.3 offline cannot install providers), so it
# only computes an environment's settings and publishes them as outputs. A real module adds the AWS resources
# (VPC, database, DNS) here; the runbook's flow (plan, approval bound to the plan, apply, outputs) is the same.
variable "environment" {
  description = "environment name, also the Terraform workspace and the Kubernetes namespace"
  type        = string
}
variable "tier" {
  type = string
  validation {
    condition     = contains(["development", "staging", "production", "sandbox"], var.tier)
    error_message = "The tier must be development, staging, production or sandbox."
  }
}
variable "replicas" {
  type    = number
  default = 1
}
variable "api_token" {
  description = "from Vault (secrets: {api_token: \"demo/app#api_token\"}); never in workflow history"
  type        = string
  sensitive   = true
  default     = ""
}

locals {
  domain   = "${var.environment}.${var.tier == "production" ? "" : "${var.tier}."}example.internal"
  replicas = var.tier == "production" ? max(var.replicas, 3) : var.replicas
}

output "domain" { value = local.domain }
output "replicas" { value = local.replicas }
output "api_url" { value = "https://api.${local.domain}" }
output "api_token_configured" { value = nonsensitive(var.api_token != "") }
output "api_token" {
  value     = var.api_token
  sensitive = true
}

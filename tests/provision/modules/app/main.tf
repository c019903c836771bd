# Provider-free application environment: variables, locals, outputs and terraform_remote_state (local backend).
variable "environment" { type = string }
variable "tier" { type = string }
variable "replicas" {
  type    = number
  default = 2
}
variable "network_state" {
  description = "path of the network layer's local state; empty: no network layer"
  type        = string
  default     = ""
}
variable "db_password" {
  type      = string
  sensitive = true
  default   = ""
}

data "terraform_remote_state" "network" {
  count   = var.network_state == "" ? 0 : 1
  backend = "local"
  config  = { path = var.network_state }
}

locals {
  hostname = "${var.environment}.${var.tier}.example.internal"
  subnets  = var.network_state == "" ? [] : data.terraform_remote_state.network[0].outputs.subnets
}

output "hostname" { value = local.hostname }
output "replicas" { value = var.replicas }
output "subnets" { value = local.subnets }
output "db_password_set" { value = nonsensitive(var.db_password != "") }
output "database_url" {
  value     = "postgres://app:${var.db_password}@db.${local.hostname}/app"
  sensitive = true
}

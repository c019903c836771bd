# Provider-free "network" layer: its state is read by the app module through terraform_remote_state.
variable "environment" { type = string }
variable "cidr" {
  type    = string
  default = "10.42.0.0/16"
}
locals {
  subnets = [for i in range(2) : cidrsubnet(var.cidr, 8, i)]
}
output "vpc_name" { value = "vpc-${var.environment}" }
output "subnets" { value = local.subnets }

# A configuration error Terraform reports at plan time: an output derived from a sensitive variable.
variable "environment" { type = string }
variable "tier" { type = string }
variable "db_password" {
  type      = string
  sensitive = true
  default   = ""
}
output "password_length" { value = length(var.db_password) }

variable "admin_url" {
  description = "The control plane's admin API, e.g. http://control-plane.cellnet:8090."
  type        = string
  validation {
    condition     = can(regex("^https?://", var.admin_url))
    error_message = "admin_url must be an http(s) URL."
  }
}

variable "admin_token" {
  description = "The operator token of the admin API."
  type        = string
  sensitive   = true
}

variable "kubeconfig" {
  description = "Path of the kubeconfig of the cluster the cells run in."
  type        = string
  default     = "~/.kube/config"
}

variable "azure_resource_group" {
  description = "Azure resource group for the Azure OpenAI accounts."
  type        = string
}

variable "gcp_project" {
  description = "Google Cloud project for Vertex AI."
  type        = string
}

variable "tenants" {
  description = "Tenants to create, by id, with their plan."
  type        = map(string)
  default     = { acme = "standard", globex = "free" }
  validation {
    condition     = alltrue([for p in values(var.tenants) : contains(["free", "standard", "enterprise"], p)])
    error_message = "a tenant's plan must be free, standard or enterprise."
  }
}

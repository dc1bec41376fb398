variable "name" {
  description = "Short name of the region, used in resource names and as the provider-region name prefix (e.g. eu-west)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,30}$", var.name))
    error_message = "name must be 1-31 characters of a-z, 0-9 and '-', starting with a letter or digit."
  }
}

variable "namespace" {
  description = "Kubernetes namespace the provider credentials Secret is written to (where the Cells run)."
  type        = string
  default     = "cellnet"
}

variable "azure" {
  description = "Azure OpenAI in this region: a cognitive account and its model deployments; null for none."
  type = object({
    resource_group_name = string
    location            = string
    account_name        = string
    sku_name            = optional(string, "S0")
    deployments = list(object({
      name          = string
      model         = string
      model_version = string
      capacity      = optional(number, 10)
    }))
  })
  default = null
  validation {
    condition     = var.azure == null || length(try(var.azure.deployments, [])) > 0
    error_message = "azure needs at least one model deployment."
  }
  validation {
    condition     = var.azure == null || can(regex("^[a-z0-9][a-z0-9-]{1,62}$", try(var.azure.account_name, "")))
    error_message = "azure.account_name must be 2-63 characters of a-z, 0-9 and '-' (it becomes the endpoint's subdomain)."
  }
}

variable "vertex" {
  description = "Vertex AI in this region: the project's services enabled and a service account whose key cells use; null for none."
  type = object({
    project  = string
    location = string
    model    = string
  })
  default = null
  validation {
    condition     = var.vertex == null || length(try(var.vertex.location, "")) > 0
    error_message = "vertex.location must not be empty (e.g. us-central1)."
  }
}

variable "admin_url" {
  description = "The control plane's admin API; make up serves it at http://127.0.0.1:18090."
  type        = string
  default     = "http://127.0.0.1:18090"
  validation {
    condition     = can(regex("^https?://", var.admin_url))
    error_message = "admin_url must be an http(s) URL."
  }
}

variable "tenants" {
  description = "Tenants to create, by id: their plan, and optionally their semantic-cache threshold."
  type = map(object({
    plan            = string
    cache_threshold = optional(number)
  }))
  default = {
    initech = { plan = "standard" }
    hooli   = { plan = "free", cache_threshold = 0.9 }
  }
  validation {
    condition     = alltrue([for id in keys(var.tenants) : can(regex("^[a-z0-9][a-z0-9-]{0,62}$", id))])
    error_message = "a tenant id must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit."
  }
  validation {
    condition     = alltrue([for t in values(var.tenants) : contains(["free", "standard", "enterprise"], t.plan)])
    error_message = "a tenant's plan must be free, standard or enterprise."
  }
  validation {
    condition     = alltrue([for t in values(var.tenants) : t.cache_threshold == null ? true : (t.cache_threshold > 0 && t.cache_threshold <= 1)])
    error_message = "a tenant's cache_threshold must be in (0, 1]."
  }
}

variable "cells" {
  description = "Cells to register beyond make up's three, by id: region and the local port the cell will listen on (start each with scripts/start-cell.sh ID REGION PORT)."
  type = map(object({
    region   = string
    port     = number
    template = optional(string, "standard")
  }))
  default = {
    cell-4 = { region = "us-east", port = 18104 }
  }
  validation {
    condition     = alltrue([for c in values(var.cells) : contains(["eu-west", "us-east"], c.region)])
    error_message = "make up runs cells in eu-west and us-east only."
  }
  validation {
    condition     = alltrue([for c in values(var.cells) : c.port > 1024 && c.port < 65536])
    error_message = "a cell's port must be between 1025 and 65535."
  }
  validation {
    condition     = alltrue([for c in values(var.cells) : contains(["small", "standard", "large"], c.template)])
    error_message = "a cell's template must be small, standard or large."
  }
}

variable "drained_provider_regions" {
  description = "Provider regions to drain (cells fail over to their next one), e.g. [\"azure-westeurope\"]."
  type        = set(string)
  default     = []
}

variable "name" {
  description = "The cell's id: 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.name))
    error_message = "name must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit."
  }
}

variable "region" {
  description = "Region the cell serves from; a tenant's two replicas are placed in distinct regions."
  type        = string
  validation {
    condition     = length(trimspace(var.region)) > 0
    error_message = "region must not be empty."
  }
}

variable "template" {
  description = "Cell template from cell-templates/: small, standard or large."
  type        = string
  default     = "standard"
  validation {
    condition     = contains(["small", "standard", "large"], var.template)
    error_message = "template must be one of small, standard, large."
  }
}

variable "state" {
  description = "Desired lifecycle: active (takes tenants) or drained (every tenant moved off, kept registered)."
  type        = string
  default     = "active"
  validation {
    condition     = contains(["active", "drained"], var.state)
    error_message = "state must be active or drained."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the Cell resource (the operator's)."
  type        = string
  default     = "cellnet"
}

variable "cluster_domain" {
  description = "The cluster's DNS domain, for the cell's endpoint."
  type        = string
  default     = "cluster.local"
}

variable "port" {
  description = "The port cells listen on (the operator's cells.port)."
  type        = number
  default     = 8080
  validation {
    condition     = var.port > 0 && var.port < 65536
    error_message = "port must be between 1 and 65535."
  }
}

variable "storage" {
  description = "Size of the vector shard's volume, a Kubernetes quantity (e.g. 50Gi); null for the template's."
  type        = string
  default     = null
  validation {
    condition     = var.storage == null || can(regex("^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$", var.storage))
    error_message = "storage must be a Kubernetes quantity such as 50Gi."
  }
}

variable "image" {
  description = "Container image of the cell; null for the operator's."
  type        = string
  default     = null
}

variable "overrides" {
  description = "Sections of the cell config that override the template's (vector, cache, limits, embedding, retrieval, ingest, workers, hedging, prices)."
  type        = any
  default     = {}
  validation {
    condition = alltrue([
      for k in keys(var.overrides) : contains(["vector", "cache", "limits", "embedding", "retrieval", "ingest", "workers", "hedging", "prices"], k)
    ])
    error_message = "overrides may only set vector, cache, limits, embedding, retrieval, ingest, workers, hedging or prices."
  }
}

variable "provider_regions" {
  description = "LLM provider regions the cell calls, in order of preference; credentials name a Secret key in the namespace (for example the output of modules/region)."
  type = list(object({
    name        = string
    kind        = string
    region      = string
    endpoint    = optional(string)
    deployment  = optional(string)
    model       = optional(string)
    project     = optional(string)
    location    = optional(string)
    credentials = optional(object({ name = string, key = string }))
  }))
  validation {
    condition     = length(var.provider_regions) > 0
    error_message = "provider_regions needs at least one provider region."
  }
  validation {
    condition     = alltrue([for p in var.provider_regions : contains(["azure_openai", "vertex_ai", "openai_compatible"], p.kind)])
    error_message = "each provider region's kind must be azure_openai, vertex_ai or openai_compatible."
  }
}

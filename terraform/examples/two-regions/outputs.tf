output "cells" {
  description = "Every cell's endpoint, by id."
  value       = merge({ for k, c in module.cells_eu_west : k => c.endpoint }, { for k, c in module.cells_us_east : k => c.endpoint })
}

output "tenant_api_keys" {
  description = "Each tenant's API key (shown once, at creation)."
  value       = { for k, t in cellnet_tenant.this : k => t.api_key }
  sensitive   = true
}

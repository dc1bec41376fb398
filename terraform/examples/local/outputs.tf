output "api_keys" {
  description = "Each new tenant's API key, shown once by the control plane (terraform output -json api_keys)."
  value       = { for id, t in cellnet_tenant.this : id => t.api_key }
  sensitive   = true
}

output "cells" {
  description = "Every cell registered with the control plane, with its lifecycle."
  value       = { for c in data.cellnet_cells.all.cells : c.id => c.lifecycle }
}

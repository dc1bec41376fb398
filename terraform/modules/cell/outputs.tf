output "id" {
  description = "The cell's id in the control plane."
  value       = cellnet_cell.this.id
}

output "endpoint" {
  description = "The URL routers reach the cell at."
  value       = local.endpoint
}

output "lifecycle" {
  description = "The cell's lifecycle as the control plane records it (joining, active, draining, drained)."
  value       = cellnet_cell.this.lifecycle
}

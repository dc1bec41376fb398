# One cell: registered with the control plane (cellnet_cell), and run by the
# operator from a Cell resource. Destroying it removes the Cell first (the
# operator drains it, then lets its workload go), then the record.

locals {
  endpoint = "http://${var.name}-0.${var.name}.${var.namespace}.svc.${var.cluster_domain}:${var.port}"
  spec = merge(
    {
      region          = var.region
      template        = var.template
      providerRegions = [for p in var.provider_regions : { for k, v in p : k => v if v != null }]
    },
    length(var.overrides) > 0 ? { overrides = var.overrides } : {},
    var.storage == null ? {} : { storage = var.storage },
    var.image == null ? {} : { image = var.image },
  )
}

resource "cellnet_cell" "this" {
  name     = var.name
  region   = var.region
  endpoint = local.endpoint
  template = var.template
  state    = var.state
}

resource "kubernetes_manifest" "cell" {
  manifest = {
    apiVersion = "cellnet.io/v1"
    kind       = "Cell"
    metadata = {
      name      = var.name
      namespace = var.namespace
    }
    spec = local.spec
  }

  wait {
    fields = {
      "status.phase" = var.state == "active" ? "Active" : "Drained"
    }
  }

  depends_on = [cellnet_cell.this]
}

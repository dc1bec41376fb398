# Tenants and cells of a running `make up` system, through the cellnet
# provider only. The operator token comes from ADMIN_TOKEN (.local/demo.env).

provider "cellnet" {
  endpoint = var.admin_url
}

resource "cellnet_cell" "extra" {
  for_each = var.cells
  name     = each.key
  region   = each.value.region
  endpoint = "http://127.0.0.1:${each.value.port}"
  template = each.value.template
}

resource "cellnet_tenant" "this" {
  for_each        = var.tenants
  name            = each.key
  plan            = each.value.plan
  cache_threshold = each.value.cache_threshold
}

resource "cellnet_provider_region" "drained" {
  for_each = var.drained_provider_regions
  name     = each.value
  drained  = true
}

data "cellnet_cells" "all" {
  depends_on = [cellnet_cell.extra]
}

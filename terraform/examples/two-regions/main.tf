# Two regions, each with its provider regions and two cells, and the
# tenants; the control plane places every tenant on one cell of each region.

provider "cellnet" {
  endpoint = var.admin_url
  token    = var.admin_token
}

provider "kubernetes" {
  config_path = var.kubeconfig
}

provider "azurerm" {
  features {}
}

provider "google" {
  project = var.gcp_project
}

module "eu_west" {
  source = "../../modules/region"
  name   = "eu-west"
  azure = {
    resource_group_name = var.azure_resource_group
    location            = "westeurope"
    account_name        = "cellnet-westeurope"
    deployments         = [{ name = "gpt-4o-mini", model = "gpt-4o-mini", model_version = "2024-07-18" }]
  }
}

module "us_east" {
  source = "../../modules/region"
  name   = "us-east"
  azure = {
    resource_group_name = var.azure_resource_group
    location            = "eastus"
    account_name        = "cellnet-eastus"
    deployments         = [{ name = "gpt-4o-mini", model = "gpt-4o-mini", model_version = "2024-07-18" }]
  }
  vertex = {
    project  = var.gcp_project
    location = "us-central1"
    model    = "gemini-2.0-flash"
  }
}

module "cells_eu_west" {
  source   = "../../modules/cell"
  for_each = toset(["cell-eu-west-1", "cell-eu-west-2"])
  name     = each.key
  region   = "eu-west"
  # The region's own provider first, the other region's as fallback.
  provider_regions = concat(module.eu_west.provider_regions, module.us_east.provider_regions)
}

module "cells_us_east" {
  source           = "../../modules/cell"
  for_each         = toset(["cell-us-east-1", "cell-us-east-2"])
  name             = each.key
  region           = "us-east"
  template         = "large"
  provider_regions = concat(module.us_east.provider_regions, module.eu_west.provider_regions)
}

resource "cellnet_tenant" "this" {
  for_each = var.tenants
  name     = each.key
  plan     = each.value

  depends_on = [module.cells_eu_west, module.cells_us_east]
}

# The LLM provider regions one cellnet region calls: an Azure OpenAI account
# with its model deployments, and Vertex AI (services enabled, a service
# account and its key). The keys go into one Kubernetes Secret; the outputs
# are provider_regions entries for modules/cell.

resource "azurerm_cognitive_account" "openai" {
  count                 = var.azure == null ? 0 : 1
  name                  = var.azure.account_name
  location              = var.azure.location
  resource_group_name   = var.azure.resource_group_name
  kind                  = "OpenAI"
  sku_name              = var.azure.sku_name
  custom_subdomain_name = var.azure.account_name
}

resource "azurerm_cognitive_deployment" "model" {
  for_each             = var.azure == null ? {} : { for d in var.azure.deployments : d.name => d }
  name                 = each.value.name
  cognitive_account_id = azurerm_cognitive_account.openai[0].id

  model {
    format  = "OpenAI"
    name    = each.value.model
    version = each.value.model_version
  }

  sku {
    name     = "Standard"
    capacity = each.value.capacity
  }
}

resource "google_project_service" "vertex" {
  for_each           = var.vertex == null ? toset([]) : toset(["aiplatform.googleapis.com", "iam.googleapis.com"])
  project            = var.vertex.project
  service            = each.value
  disable_on_destroy = false
}

resource "google_service_account" "cells" {
  count        = var.vertex == null ? 0 : 1
  project      = var.vertex.project
  account_id   = "cellnet-${var.name}"
  display_name = "cellnet cells of ${var.name}"
  depends_on   = [google_project_service.vertex]
}

resource "google_project_iam_member" "vertex_user" {
  count   = var.vertex == null ? 0 : 1
  project = var.vertex.project
  role    = "roles/aiplatform.user"
  member  = "serviceAccount:${google_service_account.cells[0].email}"
}

resource "google_service_account_key" "cells" {
  count              = var.vertex == null ? 0 : 1
  service_account_id = google_service_account.cells[0].name
}

resource "kubernetes_secret" "providers" {
  metadata {
    name      = "cellnet-providers-${var.name}"
    namespace = var.namespace
  }

  data = merge(
    var.azure == null ? {} : { "azure-${var.azure.location}" = azurerm_cognitive_account.openai[0].primary_access_key },
    var.vertex == null ? {} : { "vertex-${var.vertex.location}" = base64decode(google_service_account_key.cells[0].private_key) },
  )
}

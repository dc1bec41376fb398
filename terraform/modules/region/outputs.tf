output "provider_regions" {
  description = "Provider-region entries for modules/cell's provider_regions, in order: Azure OpenAI (one per deployment), then Vertex AI; credentials name keys of the Secret this module writes."
  value = concat(
    var.azure == null ? [] : [
      for d in var.azure.deployments : {
        name        = "azure-${var.azure.location}"
        kind        = "azure_openai"
        region      = var.azure.location
        endpoint    = azurerm_cognitive_account.openai[0].endpoint
        deployment  = d.name
        model       = null
        project     = null
        location    = null
        credentials = { name = kubernetes_secret.providers.metadata[0].name, key = "azure-${var.azure.location}" }
      }
    ],
    var.vertex == null ? [] : [{
      name        = "vertex-${var.vertex.location}"
      kind        = "vertex_ai"
      region      = var.vertex.location
      endpoint    = null
      deployment  = null
      model       = var.vertex.model
      project     = var.vertex.project
      location    = var.vertex.location
      credentials = { name = kubernetes_secret.providers.metadata[0].name, key = "vertex-${var.vertex.location}" }
    }],
  )
}

output "secret_name" {
  description = "The Kubernetes Secret holding this region's provider credentials."
  value       = kubernetes_secret.providers.metadata[0].name
}

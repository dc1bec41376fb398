# Both providers mocked; still, `terraform init` must install them, so this
# runs only where hashicorp/kubernetes can be had (not on machines without
# registry access).

mock_provider "cellnet" {}
mock_provider "kubernetes" {}

variables {
  name   = "cell-eu-west-1"
  region = "eu-west"
  provider_regions = [{
    name        = "azure-westeurope"
    kind        = "azure_openai"
    region      = "westeurope"
    endpoint    = "https://cellnet-westeurope.openai.azure.com"
    deployment  = "gpt-4o-mini"
    credentials = { name = "eu-west-providers", key = "azure-westeurope" }
  }]
}

run "renders_the_record_and_the_cell_resource" {
  command = plan

  assert {
    condition     = cellnet_cell.this.endpoint == "http://cell-eu-west-1-0.cell-eu-west-1.cellnet.svc.cluster.local:8080"
    error_message = "the record's endpoint is not the operator's headless Service address"
  }

  assert {
    condition     = kubernetes_manifest.cell.manifest.spec.template == "standard" && kubernetes_manifest.cell.manifest.spec.region == "eu-west"
    error_message = "the Cell's spec does not carry the template and region"
  }
}

run "a_name_that_is_not_a_dns_label_is_refused" {
  command = plan
  variables {
    name = "Cell_1"
  }
  expect_failures = [var.name]
}

run "an_empty_region_is_refused" {
  command = plan
  variables {
    region = " "
  }
  expect_failures = [var.region]
}

run "an_unknown_template_is_refused" {
  command = plan
  variables {
    template = "huge"
  }
  expect_failures = [var.template]
}

run "an_unknown_state_is_refused" {
  command = plan
  variables {
    state = "paused"
  }
  expect_failures = [var.state]
}

run "a_port_out_of_range_is_refused" {
  command = plan
  variables {
    port = 70000
  }
  expect_failures = [var.port]
}

run "a_storage_that_is_not_a_quantity_is_refused" {
  command = plan
  variables {
    storage = "lots"
  }
  expect_failures = [var.storage]
}

run "an_override_of_an_unknown_section_is_refused" {
  command = plan
  variables {
    overrides = { network = {} }
  }
  expect_failures = [var.overrides]
}

run "no_provider_region_is_refused" {
  command = plan
  variables {
    provider_regions = []
  }
  expect_failures = [var.provider_regions]
}

run "an_unknown_provider_kind_is_refused" {
  command = plan
  variables {
    provider_regions = [{ name = "x", kind = "bedrock", region = "us-east-1" }]
  }
  expect_failures = [var.provider_regions]
}

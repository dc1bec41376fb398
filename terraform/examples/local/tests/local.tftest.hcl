# Runs offline: the cellnet provider is mocked (its schema comes from the
# installed provider), so no control plane is needed.

mock_provider "cellnet" {}

run "defaults_plan_two_tenants_and_one_cell" {
  command = plan

  assert {
    condition     = length(cellnet_tenant.this) == 2 && cellnet_tenant.this["hooli"].cache_threshold == 0.9
    error_message = "the default tenants are not planned as given"
  }

  assert {
    condition     = cellnet_cell.extra["cell-4"].endpoint == "http://127.0.0.1:18104"
    error_message = "cell-4's endpoint does not follow its port"
  }
}

run "a_tenant_id_that_is_not_a_dns_label_is_refused" {
  command = plan
  variables {
    tenants = { "Not_A_Label" = { plan = "standard" } }
  }
  expect_failures = [var.tenants]
}

run "an_unknown_plan_is_refused" {
  command = plan
  variables {
    tenants = { acme = { plan = "gold" } }
  }
  expect_failures = [var.tenants]
}

run "a_cache_threshold_out_of_range_is_refused" {
  command = plan
  variables {
    tenants = { acme = { plan = "free", cache_threshold = 1.5 } }
  }
  expect_failures = [var.tenants]
}

run "a_cell_outside_make_ups_regions_is_refused" {
  command = plan
  variables {
    cells = { cell-9 = { region = "ap-south", port = 18109 } }
  }
  expect_failures = [var.cells]
}

run "a_privileged_port_is_refused" {
  command = plan
  variables {
    cells = { cell-9 = { region = "us-east", port = 80 } }
  }
  expect_failures = [var.cells]
}

run "an_unknown_template_is_refused" {
  command = plan
  variables {
    cells = { cell-9 = { region = "us-east", port = 18109, template = "huge" } }
  }
  expect_failures = [var.cells]
}

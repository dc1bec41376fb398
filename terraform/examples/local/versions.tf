terraform {
  required_version = ">= 1.6"
  required_providers {
    cellnet = {
      source  = "cellnet/cellnet"
      version = "~> 0.1"
    }
  }
}

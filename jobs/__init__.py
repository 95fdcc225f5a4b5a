"""Job specs, the `edgemine` CLI, orchestration, publishing and the synthetic drive-log generator."""

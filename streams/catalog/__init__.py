"""The catalog: meters, aggregations, plans and plan mappings, live on every worker."""

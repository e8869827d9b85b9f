"""The load generator ops run against the verification server (docs/OPERATIONS.md)."""

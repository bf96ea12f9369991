"""The daemon's HTTP listener: health, readiness (later metrics, admin API, Intuit webhooks)."""

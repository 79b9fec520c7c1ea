"""Floor 4: the admin/invoke HTTP API (Lambda's wire format), its listener and token, OpenAPI, log tails."""

__all__ = ['app', 'listener', 'log_tail', 'openapi']

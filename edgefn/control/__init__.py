"""Floor 3: the control plane. Registry and its live catalog, deploy, the async queue and destinations, schedules (SQLite)."""

__all__ = ['async_invoke', 'catalog', 'deploy', 'destinations', 'queue', 'registry', 'schedule_expressions', 'schedules', 'sqlite']

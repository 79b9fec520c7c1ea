"""Floor 3: the control plane. Registry and its live catalog, deploy, the async queue and destinations, schedules (SQLite)."""

__all__ = ['async_invoke', 'catalog', 'deploy', 'destinations', 'schedule_expressions', 'schedules', 'store']

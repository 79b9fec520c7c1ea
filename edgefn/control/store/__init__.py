"""The control plane's storage: the only place SQL is written (SQLite today; a PostgreSQL backend is a folder
beside these modules behind the same interfaces: Registry, EventQueue with QueueWork, ScheduleStore)."""

__all__ = ['queue', 'registry', 'schedules', 'sqlite']

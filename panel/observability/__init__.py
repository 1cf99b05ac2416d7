"""Observability: the request log (SQLite); metrics and the monitor move here in the house redesign."""

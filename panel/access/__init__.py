"""Who may do what: users, API keys, roles, sessions, per-user quotas, the audit log. The gate that enforces them
on every request is panel/api/gate.py; their routes are in panel/api/access.py, their CLI in panel/cli/access.py."""

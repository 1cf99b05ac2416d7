"""Who may do what: users, API keys, roles, login throttling, the request gate (body size, max_tokens, per-user
concurrency), the audit log, and their routes and CLI."""

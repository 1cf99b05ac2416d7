"""What the panel measures about itself: live generation figures, Prometheus /metrics, the GPU and memory monitor,
the request and load logs (SQLite)."""

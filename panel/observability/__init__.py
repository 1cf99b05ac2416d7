"""What the panel measures about itself: Prometheus metrics, the GPU and memory monitor, the request and load logs
(SQLite). The figures of one streamed answer are defined once in panel/calls/stats.py; the routes are in api/."""

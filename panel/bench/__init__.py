"""Benchmarks: a streaming client, suites, the result store, charts, the runner service and the `bench` CLI."""

"""Benchmarks: a streaming client, suites, the result store, charts and the runner service. Their routes are in
panel/api/bench.py and panel/api/bench_share.py, the `bench` command in panel/cli/bench.py."""

"""Shared parts of the benchmark scripts: servers on loopback, load clients, figures."""

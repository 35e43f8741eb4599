"""Helpers of the fault, chaos and stateful tests: a job that records its runs, the chaos
run itself (scripts/chaos), and checks on the stored event log."""

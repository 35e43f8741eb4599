"""Programs and job functions the command-job and external-worker tests run for real."""

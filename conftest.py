"""Registers the acestep-parity pytest plugin (options --backend, --profile, --case, --checkpoint-dir, …)."""

pytest_plugins = ["acestep_parity.plugin"]

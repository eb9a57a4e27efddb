"""Repository root marker for pytest (rootdir, ``pytest.ini``).

The acestep-parity plugin (options --backend, --profile, --case, --cases-dir, --checkpoint-dir, …) is not
registered here but through the ``pytest11`` entry point of the installed package (``pyproject.toml``), so its
options are known before pytest reads the command line.
"""

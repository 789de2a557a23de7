"""pybox's trusted runner: the only code of ours that runs inside a sandbox (see main.py)."""

"""The central side: device registry, intake, transparency log, lots and summaries.

Built out by later issues; for now ``custody-ledger`` prints its help and the
standalone verifier ``custody-verify`` is a placeholder that says so.
"""

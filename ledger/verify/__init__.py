"""The standalone, offline verifier of lot summary bundles (``custody-verify``).

Must run with only ``custody`` and ``ledger.verify`` installed (ARCHITECTURE.md).
"""

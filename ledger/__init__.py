"""The central side: device registry, intake, transparency log, lots and summaries.

Commands: ``custody-ledger`` (``cli``), the registry authority's ``custody-registry``
(``authority_cli``) and the standalone offline verifier ``custody-verify`` (``verify``,
which needs only ``custody``; ARCHITECTURE.md "Layout").
"""

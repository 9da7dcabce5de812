"""The edge capture agent: identity, config, the durable outbox, captures, CLI.

The outbox (``agent.outbox``) is the only SQLite writer on the gateway and the
source of truth: a capture is reported as taken only once it is fsynced there.
"""

"""The custody record: pure, with one exception for files.

Deterministic CBOR (``cbor``), COSE_Sign1 (``cose``), event payloads
(``event``), signed envelopes and the hash chain (``envelope``), key values
(``keys``), the group and Pedersen commitments (``group``, ``commitment``).
One module does I/O, and only to files: ``files`` replaces state files atomically and
durably, the same way on both ends. Imports nothing else of ours (ARCHITECTURE.md "Layout").
"""

__version__ = "0.1.0"

"""The custody record: pure and I/O-free.

Deterministic CBOR (``cbor``), COSE_Sign1 (``cose``), event payloads
(``event``), signed envelopes and the hash chain (``envelope``), key values
(``keys``), the group and Pedersen commitments (``group``, ``commitment``).
Imports nothing else of ours (ARCHITECTURE.md "Layout").
"""

__version__ = "0.1.0"

"""Zero-knowledge proof primitives for lot summaries (ZK.md "Construction").

- ``transcript``: the one strict Fiat–Shamir transcript every proof of a summary shares;
- ``sigma``: the AND-composition of sigma protocols under that transcript (one challenge), and
  the Schnorr proof of knowledge of a discrete log on G;
- ``rangeproof``: bit-decomposition range proofs with a CDS OR-proof per bit.

Proofs are sent in the compact form (challenge + responses); the verifier recomputes every first
message from them, absorbs it in the prover's order, and accepts only if it derives the same
challenge. Pure: no I/O, only ``custody.group``.
"""

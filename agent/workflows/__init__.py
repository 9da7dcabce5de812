"""Field workflows on top of the device bridge and the outbox.

- ``weighbridge``: the unattended weighbridge cycle, a sans-I/O state machine table;
- ``visits``: two-pass planning;
- ``visitbook``: the persisted visit book (open visits, stored tares, occupancy);
- ``station``: the runner (``Station``) and the supervised ``WeighbridgeWorker``;
- ``ticket``: the driver's ticket, as text and ESC/POS.
"""

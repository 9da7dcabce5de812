"""Device simulators that speak the real protocols, on ptys and TCP ports."""

"""Device bridge: serial transports, sans-I/O protocol parsers, camera, simulators."""

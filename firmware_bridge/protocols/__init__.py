"""Sans-I/O parsers, one per device dialect, and the registry that names them."""

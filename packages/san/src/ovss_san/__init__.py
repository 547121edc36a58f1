"""SAN (Side Adapter Network) inference on current releases."""

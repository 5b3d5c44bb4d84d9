"""Carbon wire protocols: bytes in, ``WriteBatch`` out. Pure functions, no sockets."""

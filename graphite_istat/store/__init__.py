"""The storage engine: shard files of sub-counter columns, the name index, exact rollups."""

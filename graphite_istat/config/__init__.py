"""Configuration: carbon.conf and the two storage-*.conf files, parsed into immutable objects."""

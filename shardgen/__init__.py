"""shardgen: datasets in their official layout -> WebDataset audio shards (format v1)."""
__version__ = "0.1.0"

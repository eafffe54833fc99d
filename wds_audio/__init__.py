"""wds_audio: streaming audio classification data from WebDataset shards."""
__version__ = "0.1.0"

"""shardgen: datasets in their official layout -> WebDataset audio shards (format v1)."""
__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: `shardgen --help` does not import numpy and the encoders
    if name in ("pack_parts", "merge"):
        from . import parts

        return getattr(parts, name)
    if name in ("pack", "PackOptions"):
        from . import writer

        return getattr(writer, name)
    raise AttributeError(f"module 'shardgen' has no attribute {name!r}")

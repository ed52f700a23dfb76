"""reportqa indexer: corpus → parsed sections → chunks → embeddings + lexical index → index directory."""

__version__ = "0.1.0"

"""docproc: documents in, searchable text and validated fields out."""

__version__ = "0.1.0"

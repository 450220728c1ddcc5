"""vqmon service: stream ingest, batching, sinks, metrics, alerts and the CLI."""
__version__ = "0.1.0"

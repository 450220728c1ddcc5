"""The HTTP listener of ``vqmon run`` (``metrics.listen``): /metrics, /healthz, /readyz, and the
live view (``/``, ``/api/streams``...). Standard-library WSGI server, read-only routes."""

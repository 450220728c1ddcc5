"""Where scored frames go: Redis (``redis_sink``)."""
from .redis_sink import RedisSink, decode_map, encode_map

__all__ = ["RedisSink", "decode_map", "encode_map"]

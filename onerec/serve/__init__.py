"""Online serving: the engine (ids in, sessions out, micro-batching, hot reload) and its HTTP app."""

from onerec.serve.engine import Answer, Engine, MicroBatcher, Query, ServeConfig, Snapshot

__all__ = ["Answer", "Engine", "MicroBatcher", "Query", "ServeConfig", "Snapshot"]

"""Moved to clusterwatch.store.outbox (SQL lives in the store); kept while callers move over."""

from clusterwatch.store.outbox import Message, Outbox, retry_delay

__all__ = ["Message", "Outbox", "retry_delay"]

"""The batch order of the speech sources: the same global-batch sharding as the image sources
(``reslearn.data.source.ShardedOrder``), so speech data resumes and distributes exactly alike."""

from ..data.source import ShardedOrder, sharding_for

__all__ = ["ShardedOrder", "sharding_for"]

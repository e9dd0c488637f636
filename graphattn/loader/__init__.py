"""Batching of ragged data: :class:`LengthBucketSampler` (a ``batch_sampler`` that groups
examples of similar length, and shares global batches between data-parallel ranks)."""
from graphattn.loader.bucket import LengthBucketSampler

__all__ = ["LengthBucketSampler"]

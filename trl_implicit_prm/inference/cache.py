"""`ReferenceCache`: reference log-probs keyed by content, shared across computers, bounded (LRU).

The reference model is frozen, so its log-probs of a token sequence never change: scoring the same candidates
with several checkpoints that share a reference needs the reference forward only once. The key is the
reference's identity (a path plus dtype and device, or an in-memory model's stamp) and a hash of the exact
token ids and the prompt length; the value is the float32 log-probs of the completion tokens.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

__all__ = ["ReferenceCache"]


class ReferenceCache:
    """An LRU cache of reference log-probs, bounded by bytes (and optionally by entries).

    Pass one instance to several :class:`~trl_implicit_prm.ProcessRewardComputer` objects that share a reference
    model (same path, or the same in-memory model) so the reference runs once per distinct response.
    Thread-safe. `max_bytes` counts the stored arrays (4 bytes per completion token).

    Example:

    ```python
    >>> import numpy as np
    >>> cache = ReferenceCache(max_bytes=1024)
    >>> key = cache.key("path:/ref|float32|cpu", [1, 5, 7, 9], prompt_length=2)
    >>> cache.get(key) is None
    True
    >>> cache.put(key, np.array([-1.0, -2.0], dtype=np.float32))
    >>> cache.get(key).tolist(), cache.hits, cache.misses
    ([-1.0, -2.0], 1, 1)

    ```
    """

    def __init__(self, max_bytes: int = 256 * 2**20, max_entries: int | None = None):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if max_entries is not None and max_entries <= 0:
            raise ValueError(f"max_entries must be positive or None, got {max_entries}")
        self.max_bytes = int(max_bytes)
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(reference_id: str, input_ids: np.ndarray | list[int], prompt_length: int) -> bytes:
        """The cache key of one tokenized response under one reference (a 20-byte BLAKE2b digest)."""
        ids = np.ascontiguousarray(input_ids, dtype=np.int32)
        h = hashlib.blake2b(digest_size=20)
        h.update(reference_id.encode("utf-8"))
        h.update(b"\0")
        h.update(int(prompt_length).to_bytes(8, "little", signed=True))
        h.update(ids.tobytes())
        return h.digest()

    def get(self, key: bytes) -> np.ndarray | None:
        """The cached log-probs (read-only) or None; counts a hit or a miss."""
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: bytes, value: np.ndarray) -> None:
        """Store a float32 array, evicting the least recently used entries beyond the bounds."""
        value = np.array(value, dtype=np.float32, copy=True)
        value.setflags(write=False)
        if value.nbytes > self.max_bytes:
            return  # larger than the whole cache: not worth evicting everything for it
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._nbytes -= old.nbytes
            self._data[key] = value
            self._nbytes += value.nbytes
            while self._nbytes > self.max_bytes or (
                self.max_entries is not None and len(self._data) > self.max_entries
            ):
                _, dropped = self._data.popitem(last=False)
                self._nbytes -= dropped.nbytes

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored arrays."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: bytes) -> bool:
        return key in self._data

    def clear(self) -> None:
        """Drop every entry and reset the hit/miss counters."""
        with self._lock:
            self._data.clear()
            self._nbytes = 0
            self.hits = self.misses = 0

    def __repr__(self) -> str:
        return (
            f"ReferenceCache(entries={len(self)}, nbytes={self.nbytes}, max_bytes={self.max_bytes}, "
            f"max_entries={self.max_entries}, hits={self.hits}, misses={self.misses})"
        )

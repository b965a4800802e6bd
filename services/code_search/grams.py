"""Trigram bitmaps: which files can hold a pattern's literal text, for the pattern search's prefilter.

Each indexed file gets a bitmap of the (ASCII-lowercased) three-byte sequences it contains, hashed
into ``BUCKETS`` bits (4 KB a file). A pattern such as ``isolation_level`` or ``TODO|FIXME`` can only
match in a file whose bitmap has every trigram of one of its alternatives, so ripgrep reads only
those files instead of the whole tree. Hash collisions only let extra files through (ripgrep still
decides); a file is never left out. Computed in the indexer's worker processes from the bytes they
read anyway (about 4 ms per MB), stored in the index beside the file's chunks, so it changes and
disappears with them.

Searching needs no numpy (the table is matched with big-integer bit operations, as fast here): a
code_search replica without an embeddings endpoint never loads it, about 20 MB less resident memory.
Only indexing (``bitmap``) imports it.
"""

from __future__ import annotations

import base64
import re

BITS = 15
BUCKETS = 1 << BITS
ROW_BYTES = BUCKETS // 8
_MULTIPLIER = 2654435761  # Knuth's multiplicative hash: spreads nearby codes over the whole range


def bitmap(data: bytes) -> bytes:
    """The file's trigram bitmap (``ROW_BYTES`` bytes, bit order as ``numpy.packbits``: bucket ``b`` is bit
    ``0x80 >> (b & 7)`` of byte ``b >> 3``)."""
    import numpy as np

    bits = np.zeros(BUCKETS, dtype=np.bool_)
    if len(data) >= 3:
        raw = np.frombuffer(data.lower(), dtype=np.uint8)
        # Built in place in one array: each temporary of a whole file's length costs a pass over memory.
        codes = raw[:-2].astype(np.uint32)
        codes <<= np.uint32(8)
        codes |= raw[1:-1]
        codes <<= np.uint32(8)
        codes |= raw[2:]
        codes *= np.uint32(_MULTIPLIER)
        codes >>= np.uint32(32 - BITS)
        # Indexing converts the positions to intp anyway; converting once up front is cheaper.
        bits[codes.astype(np.intp)] = True
    return np.packbits(bits).tobytes()


def encoded(data: bytes) -> str:
    """The bitmap as the index's JSON documents carry a bytes field (base64)."""
    return base64.b64encode(bitmap(data)).decode("ascii")


def bucket(trigram: bytes) -> int:
    code = (trigram[0] << 16) | (trigram[1] << 8) | trigram[2]
    return ((code * _MULTIPLIER) & 0xFFFFFFFF) >> (32 - BITS)


def buckets(runs: list[str]) -> list[int]:
    """The buckets of every trigram of these literal runs (ASCII, as the pattern fixes them)."""
    out: set[int] = set()
    for run in runs:
        data = run.lower().encode("ascii")
        out.update(bucket(data[i : i + 3]) for i in range(len(data) - 2))
    return sorted(out)


class GramTable:
    """Every indexed file's bitmap, one row each, for one searcher generation."""

    def __init__(self, keys: list[str], rows: list[bytes]) -> None:
        self.keys = keys
        self._paths: dict[str, set[str]] = {}
        for key in keys:
            repo, _, path = key.partition("\x00")
            self._paths.setdefault(repo, set()).add(path)
        self._missing: dict[str, frozenset[str]] = {}
        self._table = b"".join(rows)
        self._ones = int.from_bytes(b"\x01" * len(keys), "big")  # one flag byte a file

    def missing(self, repo: str, indexed: frozenset[str]) -> frozenset[str]:
        """Indexed files of the repository without a bitmap (written by an older version): always read."""
        found = self._missing.get(repo)
        if found is None:
            found = self._missing[repo] = indexed - self._paths.get(repo, set())
        return found

    def matching(self, alternatives: list[list[int]]) -> list[str]:
        """Keys of the files holding every bucket of at least one alternative."""
        if not self.keys:
            return []
        either = 0
        for wanted in alternatives:
            # One byte a file: the byte of each file that holds a bucket, sliced out of the rows in C, read as
            # one integer and shifted so the bucket's bit lands on bit 0 of its byte; AND keeps, per file,
            # whether every bucket so far is set.
            found = self._ones
            for b in wanted:
                column = int.from_bytes(self._table[b >> 3 :: ROW_BYTES], "big")
                found &= column >> (7 - (b & 7))
                if not found:
                    break
            either |= found
        flags = either.to_bytes(len(self.keys), "big")
        return [self.keys[match.start()] for match in re.finditer(b"\x01", flags)]

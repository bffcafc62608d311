"""The grid pack: a run's grids as WebDataset-style POSIX tar files, each with a small index.

A pack holds the PNGs of consecutive grids `first .. first + count - 1` as members
`grid_NNNNNNNN.png` in grid order (ustar, mode 0644, owner 0:0; nothing but regular files), so
`tar -x`, Python's tarfile and the `webdataset` library read it as it is (each grid is one sample,
key `grid_NNNNNNNN`, extension `png`). Its index (`pack_NNNNNNNN.json` beside
`pack_NNNNNNNN.tar`) lists each member's name, data offset, size and sha256, and the pack's own
size and sha256: one grid is one ranged GET. The format is told in docs/data-layout.md.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from cgan.errors import CganError
from cgan.layout.tensors import grid_stem_of

PACK_GRIDS = 1000  # grids per pack: about 27 MB of PNG, the size the ecosystem's shard readers like
PACKS_DIR = "packs"
PACK_INDEX_VERSION = 1
MAX_INDEX_BYTES = 1 << 20  # an index of 1,000 members is about 110 KB
TAR_BLOCK = 512
PNG_SUFFIX = ".png"


class PackError(CganError):
    """A pack or its index is not what the format promises (damaged, foreign or partial)."""

    retryable = False


def pack_stem(first: int) -> str:
    """`pack_00042000`: the name of the pack whose first grid is `first`."""
    return f"pack_{grid_stem_of(first)[len('grid_'):]}"


def pack_name(first: int) -> str:
    return f"{pack_stem(first)}.tar"


def index_name(first: int) -> str:
    return f"{pack_stem(first)}.json"


def pack_key(first: int) -> str:
    """A pack's key relative to the root it lies under (an attempt, or the workspace)."""
    return f"{PACKS_DIR}/{pack_name(first)}"


def index_key(first: int) -> str:
    return f"{PACKS_DIR}/{index_name(first)}"


def member_name(grid: int) -> str:
    return f"{grid_stem_of(grid)}{PNG_SUFFIX}"


def pack_ranges(start: int, count: int, pack_grids: int = PACK_GRIDS) -> list[range]:
    """The packs of grids start..start+count-1: consecutive ranges of at most pack_grids, the
    shorter ones spread evenly (2,500 grids: 834 + 833 + 833, not 1000 + 1000 + 500)."""
    if count < 1:
        return []
    packs = -(-count // pack_grids)
    base, extra = divmod(count, packs)
    ranges, first = [], start
    for i in range(packs):
        size = base + (1 if i < extra else 0)
        ranges.append(range(first, first + size))
        first += size
    return ranges


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data, from the start of the tar
    size: int
    sha256: str


@dataclass(frozen=True)
class PackIndex:
    first: int
    members: tuple[Member, ...]
    size: int  # of the tar
    sha256: str  # of the tar

    @property
    def count(self) -> int:
        return len(self.members)

    def member(self, grid: int) -> Member:
        i = grid - self.first
        if not 0 <= i < len(self.members):
            raise PackError(f"grid {grid} is not in the pack of grids {self.first}..{self.first + self.count - 1}")
        return self.members[i]

    def to_json(self) -> bytes:
        return json.dumps({"version": PACK_INDEX_VERSION, "pack": pack_name(self.first), "first": self.first,
                           "count": self.count, "size": self.size, "sha256": self.sha256,
                           "members": [[m.name, m.offset, m.size, m.sha256] for m in self.members]},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, *, first: int | None = None, count: int | None = None) -> PackIndex:
        """The index of `data`; PackError when it is not one (or not of grids first..first+count-1)."""
        try:
            doc = json.loads(data)
            if doc.get("version") != PACK_INDEX_VERSION:
                raise PackError(f"pack index version {doc.get('version')!r}, this reader knows {PACK_INDEX_VERSION}")
            start, size, sha = doc["first"], doc["size"], doc["sha256"]
            members = tuple(Member(n, o, s, h) for n, o, s, h in doc["members"])
        except PackError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PackError(f"not a pack index ({exc})") from None
        if not (_is_whole(start) and _is_whole(size) and _is_sha256(sha) and members
                and doc.get("count") == len(members) and doc.get("pack") == pack_name(start)):
            raise PackError(f"not a pack index (first {start!r}, size {size!r}, count {doc.get('count')!r} of "
                            f"{len(members)} member(s), pack {doc.get('pack')!r})")
        index = cls(start, members, size, sha)
        if (first is not None and start != first) or (count is not None and index.count != count):
            raise PackError(f"the index is of grids {start}..{start + index.count - 1}, "
                            f"expected {first}..{(first or 0) + (count or 0) - 1}")
        end = 0  # where the previous member's data ends: each member's header block lies after it
        for i, m in enumerate(members):
            if not (isinstance(m.name, str) and _is_whole(m.offset) and _is_whole(m.size) and _is_sha256(m.sha256)
                    and m.name == member_name(start + i) and not m.offset % TAR_BLOCK and m.size >= 1
                    and m.offset >= end + TAR_BLOCK and m.offset + m.size <= size):
                raise PackError(f"pack index member {i} ({m.name!r:.40}) is not grid {start + i} at a block inside "
                                "the pack")
            end = m.offset + m.size
        return index


class PackWriter:
    """Writes the PNGs of grids `first .. first + count - 1` into one tar at `path`, in grid order,
    whatever order they are given in (out-of-order PNGs wait in memory until their turn)."""

    def __init__(self, path: str | Path, first: int, count: int, *, mtime: int = 0):
        self.path, self.first, self.count, self.mtime = Path(path), first, count, mtime
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = _HashingFile(open(self.path, "wb"))  # noqa: SIM115 - closed in finish/abort
        self._tar = tarfile.open(fileobj=cast(IO[bytes], self._fh), mode="w", format=tarfile.USTAR_FORMAT)
        self._next = first
        self._waiting: dict[int, bytes] = {}
        self._members: list[Member] = []

    @property
    def done(self) -> bool:
        return self._next == self.first + self.count

    def add(self, grid: int, png: bytes) -> bool:
        """Queue grid's PNG; True once every grid of the pack is written."""
        if not self.first <= grid < self.first + self.count or grid < self._next or grid in self._waiting:
            raise PackError(f"grid {grid} is not a missing grid of the pack {pack_name(self.first)}")
        self._waiting[grid] = png
        while self._next in self._waiting:
            self._write(self._next, self._waiting.pop(self._next))
            self._next += 1
        return self.done

    def _write(self, grid: int, png: bytes) -> None:
        import io

        info = tarfile.TarInfo(member_name(grid))
        info.size, info.mtime, info.mode = len(png), self.mtime, 0o644
        self._tar.addfile(info, io.BytesIO(png))
        offset = self._tar.offset - -(-len(png) // TAR_BLOCK) * TAR_BLOCK
        self._members.append(Member(info.name, offset, len(png), hashlib.sha256(png).hexdigest()))

    def finish(self) -> PackIndex:
        """Close the tar (end-of-archive blocks) and return its index."""
        if not self.done:
            raise PackError(f"{pack_name(self.first)}: {self.first + self.count - self._next} grid(s) missing")
        self._tar.close()
        self._fh.close()
        return PackIndex(self.first, tuple(self._members), self._fh.size, self._fh.sha.hexdigest())

    def abort(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


class _HashingFile:
    """A file opened for writing that hashes what goes through it (the pack's sha256 in one pass)."""

    def __init__(self, fh):
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self.fh.close()


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def check_member(index: PackIndex, grid: int, data: bytes) -> bytes:
    """The PNG bytes of `grid` read from its pack, checked against the index (PackError otherwise)."""
    member = index.member(grid)
    if len(data) != member.size or hashlib.sha256(data).hexdigest() != member.sha256:
        raise PackError(f"{member.name} of {pack_name(index.first)} does not match its index (sha256): the pack "
                        "was replaced or damaged")
    return data


def read_members(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular member of a local pack, as a consumer reads it."""
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            if info.isfile():
                fh = tar.extractfile(info)
                if fh is not None:
                    yield info.name, fh.read()


def grid_of_member(name: str) -> int | None:
    """The grid number of a member name, None for any other name."""
    stem = name.removesuffix(PNG_SUFFIX)
    if name == stem or not stem.startswith("grid_") or not stem[5:].isdigit():
        return None
    return int(stem[5:])

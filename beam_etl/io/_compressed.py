"""Reading compressed files whole and safely: a truncated or corrupt stream is an error.

Beam's decompressing reader (`CompressionTypes.AUTO`) returns a short stream for a truncated
`.gz`/`.zst` file and nothing for a truncated `.bz2` one, without an error; these readers
check that every compressed stream reaches its end marker.
"""

import bz2
import lzma
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import Any, BinaryIO, Final

import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_etl.errors import ConnectorError

_DECODERS: Final[dict[str, Callable[[], Any]]] = {
    CompressionTypes.GZIP: lambda: zlib.decompressobj(wbits=31),
    CompressionTypes.DEFLATE: lambda: zlib.decompressobj(),
    CompressionTypes.BZIP2: bz2.BZ2Decompressor,
    CompressionTypes.ZSTD: lambda: zstandard.ZstdDecompressor().decompressobj(),
    CompressionTypes.LZMA: lzma.LZMADecompressor,
}


def read_chunks(path: str, size: int) -> Generator[bytes, None, None]:
    """Yield the bytes of `path`, decompressed by its extension, in chunks of about `size`.

    Beam's own decompressing reader returns a short stream for a truncated `.gz`/`.zst` file
    and nothing for a truncated `.bz2` one; this one checks that every stream ends properly.

    Raises:
        ConnectorError: the file cannot be opened, or its compressed stream is corrupt or cut.
    """
    kind = CompressionTypes.detect_compression_type(path)
    try:
        raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:  # Beam raises BeamIOError, OSError ... by filesystem
        raise ConnectorError(f"Cannot open `{path}`: {exc}") from exc
    with raw:
        if kind == CompressionTypes.UNCOMPRESSED:
            while chunk := raw.read(size):
                yield chunk
        elif kind in _DECODERS:
            try:
                yield from _decompress(raw, _DECODERS[kind], size)
            except (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as exc:
                raise ConnectorError(f"`{path}` is not a valid {kind} file: {exc}") from exc
        else:
            raise ConnectorError(f"Compression `{kind}` of `{path}` is not supported")


def _decompress(raw: BinaryIO, make: Callable[[], Any], size: int) -> Iterator[bytes]:
    decoder, fed = make(), False
    while chunk := raw.read(size):
        while chunk:  # concatenated streams (multi-member gzip, several zstd frames)
            fed = True
            if out := decoder.decompress(chunk):
                yield out
            chunk = b""
            if decoder.eof:
                chunk, decoder, fed = decoder.unused_data, make(), False
    if fed and not decoder.eof:
        raise EOFError("the compressed stream ends before its end marker (truncated file?)")


def is_compressed(path: str) -> bool:
    """Whether `path` names a compressed file (by its extension)."""
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


class ChunkStream:
    """A minimal binary stream (`read(n)`) over `read_chunks`, for readers that want one."""

    def __init__(self, path: str, chunk_size: int = 1 << 24) -> None:
        self._chunks = read_chunks(path, chunk_size)
        self._pending: list[bytes] = []
        self._length = 0
        self._done = False

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or self._length < size):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._done = True
            else:
                self._pending.append(chunk)
                self._length += len(chunk)
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        if 0 <= size < len(data):
            data, rest = data[:size], data[size:]
            self._pending, self._length = [rest], len(rest)
        else:
            self._pending, self._length = [], 0
        return data


#: Compressions a file sink can write, with the file extension that selects each.
WRITE_COMPRESSIONS: Final = {"none": None, "gzip": ".gz", "bz2": ".bz2", "zstd": ".zst"}


def resolve_compression(path: str, compression: str | None) -> str | None:
    """Return the compression to write `path` with: the one asked, else by extension, else none.

    Raises:
        ValueError: an unknown compression name.
    """
    if compression is not None and compression not in WRITE_COMPRESSIONS:
        choices = ", ".join(WRITE_COMPRESSIONS)
        raise ValueError(f"Unknown compression `{compression}`; use one of {choices}")
    if compression is None:
        by_suffix = {suffix: name for name, suffix in WRITE_COMPRESSIONS.items() if suffix}
        compression = next((n for s, n in by_suffix.items() if path.endswith(s)), "none")
    return None if compression == "none" else compression


def open_compressed_writer(path: str, compression: str | None):
    """Open `path` for writing bytes through `compression` (pyarrow's C++ codecs)."""
    import pyarrow as pa

    raw = pa.OSFile(path, "wb")
    return pa.CompressedOutputStream(raw, compression) if compression else raw

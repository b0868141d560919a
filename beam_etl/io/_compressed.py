"""Reading files safely: compressed streams whole, and what the first bytes of a file say.

Beam's decompressing reader (`CompressionTypes.AUTO`) returns a short stream for a truncated
`.gz`/`.zst` file and nothing for a truncated `.bz2` one, without an error; these readers
check that every compressed stream reaches its end marker. Text readers look at the first
bytes of every file (`check_head`) so that compressed data under a plain name, UTF-16/32 text
read as an ASCII-compatible encoding, or binary data fail with one clear error instead of
loading garbage.
"""

import bz2
import codecs
import lzma
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import Any, BinaryIO, Final, NamedTuple

import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_etl.core.errors import ConnectorError
from beam_etl.core.threads import prefetched

_DECODERS: Final[dict[str, Callable[[], Any]]] = {
    CompressionTypes.GZIP: lambda: zlib.decompressobj(wbits=31),
    CompressionTypes.DEFLATE: lambda: zlib.decompressobj(),
    CompressionTypes.BZIP2: bz2.BZ2Decompressor,
    CompressionTypes.ZSTD: lambda: zstandard.ZstdDecompressor().decompressobj(),
    CompressionTypes.LZMA: lzma.LZMADecompressor,
}


def open_raw(path: str) -> BinaryIO:
    """Open `path` (any Beam file system) for reading its bytes as stored, not decompressed.

    Raises:
        ConnectorError: the file cannot be opened.
    """
    try:
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:  # Beam raises BeamIOError, OSError ... by filesystem
        raise ConnectorError(f"Cannot open `{path}`: {exc}") from exc


def read_chunks(path: str, size: int) -> Generator[bytes, None, None]:
    """Yield the bytes of `path`, decompressed by its extension, in chunks of about `size`.

    Beam's own decompressing reader returns a short stream for a truncated `.gz`/`.zst` file
    and nothing for a truncated `.bz2` one; this one checks that every stream ends properly.

    Raises:
        ConnectorError: the file cannot be opened, or its compressed stream is corrupt or cut.
    """
    kind = CompressionTypes.detect_compression_type(path)
    with open_raw(path) as raw:
        if kind == CompressionTypes.UNCOMPRESSED:
            while chunk := raw.read(size):
                yield chunk
        elif kind in _DECODERS:
            try:  # decompressing releases the GIL: done ahead, beside the caller's parsing
                yield from prefetched(_decompress(raw, _DECODERS[kind], size))
            except (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as exc:
                raise ConnectorError(f"`{path}` is not a valid {kind} file: {exc}") from exc
        else:
            raise ConnectorError(f"Compression `{kind}` of `{path}` is not supported")


def _decompress(raw: BinaryIO, make: Callable[[], Any], size: int) -> Iterator[bytes]:
    """Yield the decompressed bytes, about `size` at a time for text compressed ~4 times."""
    decoder, fed = make(), False
    while chunk := raw.read(max(size // 4, 1 << 16)):
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
        self._chunk = b""  # the chunk being read, from `_position` on
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        """Return up to `size` bytes (all that is left: -1), copied once."""
        parts: list[bytes | memoryview] = []
        wanted = size
        while size < 0 or wanted > 0:
            if self._position >= len(self._chunk):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._chunk, self._position = chunk, 0
                continue
            end = len(self._chunk) if size < 0 else min(len(self._chunk), self._position + wanted)
            whole = self._position == 0 and end == len(self._chunk)
            parts.append(self._chunk if whole else memoryview(self._chunk)[self._position : end])
            wanted -= end - self._position
            self._position = end
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)


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


#: How many first bytes of a file `sniff` looks at.
HEAD_BYTES: Final = 4096
_MAGIC: Final = (  # (kind, extension that would read it, magic bytes)
    ("gzip", ".gz", b"\x1f\x8b"),
    ("zstd", ".zst", b"\x28\xb5\x2f\xfd"),
    ("xz", ".xz", b"\xfd7zXZ\x00"),
    ("zip", None, b"PK\x03\x04"),
    ("zip", None, b"PK\x05\x06"),
)
_BZ2_BLOCKS: Final = (b"1AY&SY", b"\x17rE8P\x90")  # first block, or end of an empty stream
_BOMS: Final = (  # longest first: a UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Bytes that never occur in text: C0 controls other than tab, line feed, vertical tab, form
# feed and carriage return.
_CONTROL: Final = bytes([*range(0, 9), *range(14, 32)])


class Sniffed(NamedTuple):
    """What the first bytes of a file are, when they are not plain ASCII-compatible text.

    kind: `compressed`, `text` (UTF-16/32) or `binary`.
    what: a description for messages.
    option: the setting that reads it: an encoding for text, an extension for compressed data.
    """

    kind: str
    what: str
    option: str | None = None


def sniff(head: bytes) -> Sniffed | None:
    """Return what `head` (the first bytes of a file) shows, or None for ASCII-compatible text.

    Looks for compression magic numbers (gzip, bzip2, zstd, xz, zip), UTF-32/16 byte-order
    marks, the NUL pattern of UTF-16/32 text without one, and binary data (C0 control bytes in
    more than 1% of the first `HEAD_BYTES`). Pure, a few vectorized passes over 4 KiB.
    """
    head = head[:HEAD_BYTES]
    for kind, extension, magic in _MAGIC:
        if head.startswith(magic):
            return Sniffed("compressed", f"{kind}-compressed data", extension)
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in _BZ2_BLOCKS:
        return Sniffed("compressed", "bzip2-compressed data", ".bz2")
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            name = encoding.upper()
            what = f"{name} text (it starts with a {name} byte-order mark)"
            return Sniffed("text", what, encoding)
    found = _nul_pattern(head)
    if found:
        return found
    controls = len(head) - len(head.translate(None, _CONTROL))
    if controls >= max(4, len(head) // 100):
        return Sniffed("binary", f"binary data ({controls} control bytes in its first {len(head)})")
    return None


def _nul_pattern(head: bytes) -> Sniffed | None:
    """UTF-16/32 text without a byte-order mark: mostly ASCII, so NUL in set places."""
    if head.count(0) < 4:
        return None
    for width, name in ((4, "utf-32"), (2, "utf-16")):
        units = len(head) // width
        if units < 2:
            continue
        lanes = [head[i : units * width : width] for i in range(width)]
        zeros = [lane.count(0) / units for lane in lanes]
        for order, text_lane in (("le", 0), ("be", width - 1)):
            others = [z for i, z in enumerate(zeros) if i != text_lane]
            if zeros[text_lane] < 0.1 and min(others) >= 0.5:
                encoding = f"{name}-{order}"
                what = f"{name.upper()} text without a byte-order mark ({encoding})"
                return Sniffed("text", what, encoding)
    return None


def is_ascii_compatible(encoding: str) -> bool:
    """Whether `encoding` writes ASCII text as ASCII bytes (so line ends, delimiters and quotes
    can be found in the raw bytes): UTF-8 and Latin-1 are, UTF-16 and UTF-32 are not."""
    probe = "\n\r\t ,;|\"'\\azAZ09"
    try:
        return probe.encode(encoding) == probe.encode("ascii")
    except (UnicodeError, LookupError):
        return False


def check_head(path: str, head: bytes, *, reader: str, encoding: str | None = None) -> None:
    """Raise a `ConnectorError` naming `path` if its first bytes are no text `reader` can read.

    `encoding` is the reader's encoding option (None: the format is always UTF-8). Compressed
    data under a name without its extension, UTF-16/32 text read as an ASCII-compatible
    encoding, and binary data are refused; a file whose name says it is compressed is checked
    on its decompressed bytes.

    Raises:
        ConnectorError: with what the bytes are and the setting or step that reads them.
    """
    if encoding is not None and not is_ascii_compatible(encoding):
        return  # UTF-16/32 declared: decoded before any check could look at it
    found = sniff(head)
    if found is None:
        return
    if found.kind == "compressed":
        how = (
            f"add `{found.option}` to its name so that it is read decompressed"
            if found.option
            else "extract it first"
        )
        raise ConnectorError(
            f"`{path}` holds {found.what}, but its name does not say so: {how} "
            "(compression is recognised by the file extension)"
        )
    if found.kind == "text" and encoding is not None:
        raise ConnectorError(
            f"`{path}` is {found.what}, not `{encoding}`: set `encoding: {found.option}`"
        )
    if found.kind == "text":
        raise ConnectorError(
            f"`{path}` is {found.what}; {reader} reads UTF-8 only: convert it first "
            f"(for example `iconv -f {found.option} -t utf-8`)"
        )
    raise ConnectorError(f"`{path}` holds {found.what}, not {reader} text")


class Transcoded:
    """A binary stream (`read(n)`) of the UTF-8 text of a stream in another encoding.

    Bytes invalid in the encoding raise a `ConnectorError` naming `path` (the byte offsets of
    records are not known before decoding, so they cannot become per-row dead letters).
    """

    def __init__(self, stream: Any, encoding: str, path: str) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)("strict")
        self._encoding = encoding
        self._path = path
        self._buffer = b""
        self._done = False
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            raw = self._stream.read(1 << 20 if size < 0 else max(size, 1 << 16))
            try:
                text = self._decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                at = self._position + exc.start
                raise ConnectorError(
                    f"`{self._path}` holds bytes invalid in encoding `{self._encoding}` near "
                    f"byte {at}: check `encoding`"
                ) from exc
            self._position += len(raw)
            self._done = not raw
            self._buffer += text.encode("utf-8")
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


class Prefixed:
    """A binary stream that returns `head` first, then what `stream` holds."""

    def __init__(self, head: bytes, stream: Any) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(size)
        if 0 <= size <= len(self._head):
            data, self._head = self._head[:size], self._head[size:]
            return data
        data, self._head = self._head, b""
        return data + self._stream.read(-1 if size < 0 else size - len(data))

    def readinto(self, buffer: Any) -> int:
        """Read into `buffer` (writable bytes), as a file's `readinto` does: the head first."""
        buffer = memoryview(buffer).cast("B")
        if self._head:
            count = min(len(self._head), len(buffer))
            buffer[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        return read_into(self._stream, buffer)


def read_into(stream: Any, buffer: Any) -> int:
    """Read what `stream` gives at once into `buffer` (writable bytes), with its `readinto`
    where it has one; 0 at its end."""
    buffer = memoryview(buffer).cast("B")
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        return readinto(buffer) or 0
    chunk = stream.read(len(buffer)) or b""  # None, as an end (as `read`'s callers take it)
    if len(chunk) > len(buffer):
        raise ValueError(f"A stream returned {len(chunk)} bytes when asked for {len(buffer)}")
    buffer[: len(chunk)] = chunk
    return len(chunk)

"""CSV bytes as text: what the bytes are (UTF-8, UTF-16/32 with or without a BOM, or not text
at all: Parquet, compressed, a workbook, binary), decoding them, and text in line-ended blocks so
a file of any size streams in flat memory. Every refusal is a :class:`DataError` saying what the
file is and what to save instead."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

from netsec_tasks.errors import DataError

_BLOCK_CHARS = 1 << 22  # text per layout-scan block: memory stays flat whatever the file size
# Leading bytes of files that are not CSV text, and what to do instead.
_NOT_CSV = (
    (b"PAR1", "a Parquet file, not CSV text: upload a CSV, or give the file a .parquet name"),
    (b"\x1f\x8b", "gzip-compressed: decompress it (gunzip) and use the CSV inside"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook is one): export the sheet as 'CSV UTF-8'"),
    (b"\xd0\xcf\x11\xe0", "an Excel 97-2003 workbook (.xls): export the sheet as 'CSV UTF-8'"),
    (b"BZh", "bzip2-compressed: decompress it and use the CSV inside"),
    (b"\xfd7zXZ", "xz-compressed: decompress it and use the CSV inside"),
)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def not_text(head: bytes) -> str | None:
    """Why bytes starting with ``head`` are not CSV text, or None."""
    for magic, what in _NOT_CSV:
        if head.startswith(magic):
            return what
    nul = head[:4096].find(b"\x00")
    if nul >= 0 and not any(head.startswith(bom) for bom, _ in _BOMS):
        return f"binary data (a NUL byte at offset {nul}), not CSV text"
    return None


def bom_encoding(head: bytes) -> str | None:
    """``utf-16``/``utf-32`` when ``head`` starts with their byte-order mark."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    return None


def utf16_without_bom(head: bytes) -> str | None:
    """``utf-16-le``/``-be`` for text of ASCII characters saved as UTF-16 without a BOM (every
    other byte NUL), else None."""
    sample = head[: len(head) - len(head) % 2][:4096]
    if len(sample) < 4:
        return None
    for name, zeros in (("utf-16-le", sample[1::2]), ("utf-16-be", sample[0::2])):
        if zeros.count(0) == len(zeros):
            return name
    return None


def _not_utf8(data: bytes, exc: UnicodeDecodeError, source: str, line_offset: int = 0) -> DataError:
    byte = data[exc.start : exc.start + 1].hex().upper()
    line = data[: exc.start].count(b"\n") + 1 + line_offset
    return DataError(
        f"line {line} is not UTF-8 text (byte 0x{byte}; Windows-1252 or Latin-1?): save the "
        "file as 'CSV UTF-8'",
        source=source,
    )


def decode_csv(data: bytes, source: str) -> tuple[str, list[str]]:
    """The text of a CSV file's bytes (BOM removed) and notes on any conversion. Raises
    DataError saying what the bytes are when they are not CSV text."""
    if not data or not data.strip():
        raise DataError("file is empty; expected a CSV with a header row", source=source)
    encoding = bom_encoding(data[:4]) or utf16_without_bom(data[:4096])
    if encoding is None:
        why = not_text(data[:4096])
        if why:
            raise DataError(f"file is {why}", source=source)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _not_utf8(data, exc, source) from None
        return text, []
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        raise DataError(
            f"file starts like {encoding.upper()} text but does not decode as it: save it as 'CSV UTF-8'",
            source=source,
        ) from None
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise DataError("file is binary data (NUL characters), not CSV text", source=source)
    if not text.strip():
        raise DataError("file is empty; expected a CSV with a header row", source=source)
    return text, [f"decoded from {encoding.upper()}"]


def blocks_of(text: str) -> Iterator[str]:
    """``text`` in blocks of about :data:`_BLOCK_CHARS` that end at a line end."""
    start = 0
    while start < len(text):
        end = _line_cut(text, start + _BLOCK_CHARS)
        yield text[start:end]
        start = end


def _line_cut(text: str, at: int) -> int:
    """A cut position at or after ``at`` just past a line end (or the end of ``text``)."""
    if at >= len(text):
        return len(text)
    nl = text.find("\n", at)
    if nl >= 0:
        return nl + 1
    cr = text.find("\r", at)  # a file with CR line ends only
    return cr + 1 if 0 <= cr < len(text) - 1 else len(text)


def file_blocks(path: Path, source: str) -> Iterator[str]:
    """A UTF-8 file's text in blocks ending at a line end, decoded as it streams."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    carry = ""
    lines_before = 0
    with open(path, "rb") as fh:
        while True:
            raw = fh.read(_BLOCK_CHARS)
            try:
                text = carry + decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                raise _not_utf8(raw, exc, source, lines_before) from None
            if not raw:
                if text:
                    yield text
                return
            cut = text.rfind("\n") + 1
            if cut == 0:
                carry = text
                continue
            block, carry = text[:cut], text[cut:]
            lines_before += block.count("\n")
            yield block

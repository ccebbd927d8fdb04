"""Exit 0 when a QR matrix read off the web client's canvas is the code of the same payload
that segno (the Python client's QR library) makes: byte mode, level M, one of the eight
masks. Reads {"payload_hex", "quiet_zone", "modules": [[0|1, ...], ...]} on stdin.

segno 1.6.6 differs from ISO/IEC 18004:2015 7.4.10 in one harmless way: when the bit stream
already ends on a codeword boundary after the terminator, it still appends 8 zero padding
bits (an extra 0x00 data codeword before the 0xEC/0x11 pad codewords). Decoders stop at the
terminator, so both symbols carry the same bytes, but their modules differ. The
comparison uses segno with the padding rule as the standard states it, so that it checks
every module of the web client's symbol.
"""

from __future__ import annotations

import json
import sys

import segno
from segno import consts, encoder


def _padding_bits_per_standard(buff: list[int], version: int, length: int) -> None:
    if version not in (consts.VERSION_M1, consts.VERSION_M3) and length % 8:
        buff.extend([0] * (8 - length % 8))


def main() -> int:
    encoder.write_padding_bits = _padding_bits_per_standard
    data = json.load(sys.stdin)
    payload = bytes.fromhex(data["payload_hex"])
    border = int(data["quiet_zone"])
    modules = data["modules"]
    if any(
        modules[y][x]
        for y in range(len(modules))
        for x in range(len(modules))
        if min(x, y) < border or max(x, y) >= len(modules) - border
    ):
        print("the quiet zone is not white", file=sys.stderr)
        return 1
    seen = [row[border:-border] for row in modules[border:-border]]
    for mask in range(8):
        code = segno.make(
            payload, mode="byte", error="m", boost_error=False, mask=mask, micro=False
        )
        if [[int(bool(cell)) for cell in row] for row in code.matrix] == seen:
            print(f"matches segno: version {code.version}, mask {mask}")
            return 0
    print("the canvas shows no QR code segno makes of this payload", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

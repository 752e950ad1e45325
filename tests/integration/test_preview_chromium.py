"""`personalize preview` output opened in headless Chromium (Debian `chromium`): it renders.

Each page is screenshotted at 800x1200 into the test's tmp dir, and the PNG is decoded here
(zlib + PNG row filters; no imaging library in the project) to check it is not blank and shows
the layout's own colours: the dark header bar and the blue call-to-action button.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from runners.cli import main
from runners.preview import build_samples
from transforms.render import Renderer
from transforms.settings import Settings
from transforms.triggers import load_triggers

pytestmark = pytest.mark.integration

HEADER = (0x11, 0x18, 0x27)  # .header background  #111827
BUTTON = (0x25, 0x63, 0xEB)  # .button background  #2563eb
WIDTH, HEIGHT = 800, 1200


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: run runners/bootstrap.sh (or `apt-get install chromium`)",
            pytrace=False,
        )
    return path


def screenshot(page: Path, png: Path, profile_dir: Path) -> None:
    profile_dir.mkdir()
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
        f"--screenshot={png}",
        f"--window-size={WIDTH},{HEIGHT}",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]


def png_colours(path: Path) -> tuple[int, int, set[bytes]]:
    """(width, height, the set of RGB colours) of an 8-bit RGB / RGBA non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    assert ihdr is not None
    width, height, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, f"unexpected PNG format {ihdr}"
    bpp = 3 if ctype == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    prev = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:  # Up
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(bytes(line[x : x + 3]) for x in range(0, stride, bpp))
        prev = line
    return width, height, colours


def test_preview_pages_render_in_chromium(tmp_path):
    out = tmp_path / "preview"
    assert main(["preview", "--out", str(out)]) == 0
    renderer = Renderer()
    expected = {
        f"{t.type}_{v}" for t in load_triggers(Settings().core) for v in renderer.variants(t.type)
    }
    assert len(expected) >= 4
    samples = build_samples(Settings())
    stems = {s.stem for s in samples}  # the variants, and each with every segment variant
    assert expected <= stems and len(stems) > len(expected)
    assert {p.stem for p in out.glob("*.html")} == stems | {"index"}
    assert {p.stem for p in out.glob("*.txt")} == stems
    assert not any(s.payload.fallback for s in samples)
    # Screenshots: every subject variant, and two segment variants of each (the note differs).
    shown = expected | {f"{name}_{seg}" for name in expected for seg in ("lapsed_high",
                                                                       "no_segment")}
    for name in sorted(shown | {"index"}):
        png = tmp_path / "shots" / f"{name}.png"
        png.parent.mkdir(exist_ok=True)
        screenshot(out / f"{name}.html", png, tmp_path / f"profile-{name}")
        width, height, colours = png_colours(png)
        assert (width, height) == (WIDTH, HEIGHT)
        assert len(colours) > 20, f"{name}: looks blank ({len(colours)} colours)"
        if name != "index":
            assert bytes(HEADER) in colours and bytes(BUTTON) in colours, name

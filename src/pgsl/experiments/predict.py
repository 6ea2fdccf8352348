"""``pgsl predict``: classify new images with a trained split model.

The images go through the run's own client pipeline (its defence's encoding and perturbation, the
trained client segment) and the activations through the run's server model -- in this process
from a run folder that holds both parties, or over gRPC to a running ``pgsl serve`` from a site's
run folder (the server is then never imported here). Per image, the CSV holds each stream's
softmax scores, the decision's, and the predicted class.

Inputs: a file or a folder (searched recursively, in sorted order) of PNG, PGM/PPM, JPEG, BMP or
TIFF images and DICOM files (``.dcm``, read with pydicom and windowed as the training data were:
``pgsl.data.dicom.read_dicom``). Preprocessing is the run's dataset's: the mammogram datasets
(:data:`pgsl.data.RESIZED`) zero-pad each image to a square and resize it to the run's size; the
others take images of exactly the run's size. An image that cannot be used (unreadable, a DICOM
without pixel data, the wrong size or channel count) gets a row with its error; the others are
still classified.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pgsl.checkpoint import load_checkpoint, write_csv
from pgsl.client.party import ClientParty
from pgsl.config import Config, load_config
from pgsl.data import RESIZED, DataError, load_dataset
from pgsl.data.dicom import read_dicom
from pgsl.data.imageops import square_resize
from pgsl.split.channel import Channel, InProcessChannel
from pgsl.split.trainer import DECISION

__all__ = ["IMAGE_SUFFIXES", "Predictor", "find_images", "load_image", "predict_images"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".pgm", ".ppm", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"})


@dataclass(frozen=True)
class ModelCard:
    """What a run's model takes and answers: its dataset, class names and image shape ``(C, H, W)``."""

    dataset: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]

    @property
    def resize(self) -> bool:
        return self.dataset in RESIZED


def model_card(run_dir: Path, cfg: Config) -> ModelCard:
    """From the run's ``metrics.json``; a run written without those fields loads its dataset."""
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if "classes" in metrics and "image_shape" in metrics:
        c, h, w = (int(v) for v in metrics["image_shape"])
        return ModelCard(cfg.data.dataset, tuple(metrics["classes"]), (c, h, w))
    ds = load_dataset(dataclasses.replace(cfg.data, limit_train=1, limit_test=1))
    return ModelCard(ds.name, ds.classes, ds.image_shape)


def find_images(path: Path) -> list[Path]:
    """``path`` itself if it is a file, else every image file under it, sorted."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _read_pixels(path: Path) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)``: uint8, or float in [0, 1] for DICOM."""
    if path.suffix.lower() == ".dcm":
        return read_dicom(path)[0]
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(im, dtype=np.float64)
                return (arr / max(1.0, float(arr.max())) * 255).astype(np.uint8)
            if im.mode not in ("L", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if path.suffix.lower() not in IMAGE_SUFFIXES:  # an extension-less DICOM
            try:
                return read_dicom(path)[0]
            except DataError:
                pass
        raise DataError(f"{path}: not a readable image ({e})") from e


def load_image(path: Path, card: ModelCard) -> torch.Tensor:
    """One image as the run's model takes it: ``(C, H, W)`` float in [0, 1]."""
    pixels = _read_pixels(path)
    c, h, w = card.image_shape
    channels = 1 if pixels.ndim == 2 else int(pixels.shape[2])
    if channels != c:
        raise DataError(f"{path}: has {channels} channel(s); this run takes {c}-channel images")
    if card.resize:
        if c != 1:
            raise DataError(f"{path}: resizing is for grey mammograms, this run takes {c} channels")
        pixels = square_resize(pixels, h)
    elif tuple(pixels.shape[:2]) != (h, w):
        raise DataError(f"{path}: is {pixels.shape[0]}x{pixels.shape[1]}; this run takes {h}x{w} images")
    arr = pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels.astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(arr))
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)


@dataclass
class Predictor:
    """A trained client and a channel to its server model."""

    client: ClientParty
    channel: Channel
    card: ModelCard

    @classmethod
    def in_process(cls, run_dir: Path, device: torch.device) -> Predictor:
        """Both parties restored from a run folder written by ``pgsl train``."""
        from pgsl.server.party import ServerParty

        cfg, card, state = _open(run_dir, device)
        if not state.get("server"):
            raise ValueError(f"{run_dir} holds a site's client only; classify through its server "
                             "with --server")
        client = ClientParty(cfg, card.image_shape[0], len(card.classes), device)
        client.load_state_dict(state["client"])
        server = ServerParty(cfg, len(card.classes), device)
        server.load_state_dict(state["server"])
        server.model.eval()
        return cls(client, InProcessChannel(server), card)

    @classmethod
    def remote(cls, run_dir: Path, channel: Channel, device: torch.device) -> Predictor:
        """A site's client (``pgsl client``'s run folder) and a channel to the running server."""
        cfg, card, state = _open(run_dir, device)
        client = ClientParty(cfg, card.image_shape[0], len(card.classes), device)
        client.load_state_dict(state["client"])
        join = getattr(channel, "join", None)
        if join is not None:
            welcome = join(cfg.model.width)
            if welcome.num_classes != len(card.classes):
                raise ValueError(f"the server answers {welcome.num_classes} classes, this run has "
                                 f"{len(card.classes)}")
            client.step = max(client.step, int(welcome.last_step))
        return cls(client, channel, card)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, C, H, W)`` in [0, 1] -> each stream's and the decision's ``(B, K)`` scores."""
        out = self.client.predict(x.to(self.client.device), self.channel)
        named = dict(zip(self.client.streams, out.streams, strict=True))
        return {**named, DECISION: out.decision}


def _open(run_dir: Path, device: torch.device) -> tuple[Config, ModelCard, dict]:
    if not (run_dir / "config.json").is_file() or not (run_dir / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{run_dir} is not a trained run (no config.json / checkpoint.pt)")
    cfg = load_config(run_dir / "config.json")
    return cfg, model_card(run_dir, cfg), load_checkpoint(run_dir / "checkpoint.pt", device)


def predict_images(predictor: Predictor, files: list[Path], out: Path, batch_size: int = 64) -> list[dict]:
    """Classify ``files`` and write one CSV row per file to ``out``; returns the rows. A file that
    cannot be read gets ``error`` and no scores."""
    card = predictor.card
    rows: list[dict] = []
    good: list[tuple[dict, torch.Tensor]] = []
    for path in files:
        row: dict = {"file": str(path), "error": ""}
        rows.append(row)
        try:
            good.append((row, load_image(path, card)))
        except (DataError, OSError) as e:
            row["error"] = str(e)
            log.warning("%s", e)
    streams = (*predictor.client.streams, DECISION)
    for i in range(0, len(good), batch_size):
        chunk = good[i:i + batch_size]
        scores = predictor.scores(torch.stack([x for _, x in chunk]))
        for j, (row, _) in enumerate(chunk):
            decision = scores[DECISION][j]
            k = int(decision.argmax())
            row.update({"predicted": card.classes[k], "index": k, "confidence": round(float(decision[k]), 6)})
            for s in streams:
                for c, name in enumerate(card.classes):
                    row[f"{s}.{name}"] = round(float(scores[s][j, c]), 6)
    columns = ["file", "predicted", "index", "confidence",
               *(f"{s}.{name}" for s in streams for name in card.classes), "error"]
    write_csv(out, [{c: row.get(c, "") for c in columns} for row in rows], columns)
    return rows

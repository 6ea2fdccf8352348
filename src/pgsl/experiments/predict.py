"""``pgsl predict``: classify new images with a trained split model.

The images go through the run's own client pipeline (its defence's encoding and perturbation, the
trained client segment) and the activations through the run's server model -- in this process
from a run folder that holds both parties, or over gRPC to a running ``pgsl serve`` from a site's
run folder (the server is then never imported here). Per image, the CSV holds each stream's
softmax scores, the decision's, and the predicted class.

Inputs: a file or a folder (searched recursively, in sorted order) of PNG, PGM/PPM, JPEG, BMP or
TIFF images and DICOM files (``.dcm``, read with pydicom and windowed as the training data were:
``pgsl.data.dicom.read_dicom``). Preprocessing is the run's protocol, read from its config; nothing
is resized into a model trained on something else:

- a whole-image model (the mammogram datasets of :data:`pgsl.data.RESIZED`, MIAS's ``whole``
  protocol) prepares each film as its training films were (MIAS: segmentation, orientation, CLAHE,
  the breast's box, as configured), zero-pads it to a square and resizes it to the run's size;
- a patch model (MIAS's ``roi`` protocol) takes a patch of exactly its input size as one region;
  any other image is a film at the training films' resolution, prepared as they were and scanned:
  windows of ``roi_size`` film pixels, overlapping by half, over the breast (the mask of
  :func:`pgsl.data.mammo.breast_mask`). The film's answer is its most abnormal patch's (highest
  ``1 - P(normal)``; for benign vs malignant, highest ``P(malignant)``): class, score and where
  (the window's centre as array ``row, col`` and as Info.txt's ``x, y``, origin bottom-left). Every
  patch's scores go to a second CSV (``<out>.patches.csv``);
- the other datasets take images of exactly the run's size.

An image that cannot be used (unreadable, a DICOM without pixel data, the wrong size or channel
count) gets a row with its error; the others are still classified.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pgsl.checkpoint import load_checkpoint, write_csv
from pgsl.client.party import ClientParty
from pgsl.config import Config, load_config
from pgsl.data import RESIZED, DataError, load_dataset, mammo
from pgsl.data.dicom import read_dicom
from pgsl.data.imageops import square_resize
from pgsl.data.mias import InfoRow, Preparation, crop, whole_image
from pgsl.split.channel import Channel, InProcessChannel
from pgsl.split.trainer import DECISION

__all__ = ["IMAGE_SUFFIXES", "Predictor", "find_images", "load_image", "predict_images"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".pgm", ".ppm", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"})


@dataclass(frozen=True)
class ModelCard:
    """What a run's model takes and answers: its dataset, class names, image shape ``(C, H, W)``,
    and for MIAS its protocol (``whole`` or ``roi``), patch side in film pixels and preparation."""

    dataset: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    protocol: str = "whole"
    roi_size: int = 0
    prep: Preparation = Preparation()
    crop_breast: bool = False

    @property
    def resize(self) -> bool:
        return self.dataset in RESIZED

    @property
    def patches(self) -> bool:
        """A patch model: films are scanned with windows of ``roi_size`` pixels."""
        return self.dataset == "mias" and self.protocol == "roi"

    def abnormal_score(self, scores: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` class scores -> ``(N,)``: ``1 - P(normal)``, or ``P(last class)`` (malignant)
        for a task without a normal class."""
        if "normal" in self.classes:
            return 1.0 - scores[:, self.classes.index("normal")]
        return scores[:, -1]


def model_card(run_dir: Path, cfg: Config) -> ModelCard:
    """From the run's ``metrics.json`` and config; a run written without those fields loads its dataset."""
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    d = cfg.data
    protocol = {"protocol": d.protocol, "roi_size": d.roi_size, "crop_breast": d.crop_breast,
                "prep": Preparation.of(d)} if d.dataset == "mias" else {}
    if "classes" in metrics and "image_shape" in metrics:
        c, h, w = (int(v) for v in metrics["image_shape"])
        return ModelCard(d.dataset, tuple(metrics["classes"]), (c, h, w), **protocol)  # type: ignore[arg-type]
    ds = load_dataset(dataclasses.replace(d, limit_train=1, limit_test=1))
    return ModelCard(ds.name, ds.classes, ds.image_shape, **protocol)  # type: ignore[arg-type]


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


def _as_tensor(pixels: np.ndarray) -> torch.Tensor:
    arr = pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels.astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(arr))
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)


def _uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


def load_image(path: Path, card: ModelCard) -> torch.Tensor:
    """One image as the run's model takes it: ``(C, H, W)`` float in [0, 1]. For a patch model,
    an image of exactly its input size (a region already cut out); films go to :func:`load_patches`."""
    pixels = _read_pixels(path)
    c, h, w = card.image_shape
    channels = 1 if pixels.ndim == 2 else int(pixels.shape[2])
    if channels != c:
        raise DataError(f"{path}: has {channels} channel(s); this run takes {c}-channel images")
    if card.resize and not card.patches:
        if c != 1:
            raise DataError(f"{path}: resizing is for grey mammograms, this run takes {c} channels")
        if card.dataset == "mias":
            pixels = whole_image(card.prep.apply(_uint8(pixels)), h, card.crop_breast)
        else:
            pixels = square_resize(pixels, h)
    elif tuple(pixels.shape[:2]) != (h, w):
        raise DataError(f"{path}: is {pixels.shape[0]}x{pixels.shape[1]}; this run takes {h}x{w} images")
    return _as_tensor(pixels)


@dataclass(frozen=True)
class Patches:
    """A film cut into a patch model's inputs: ``images`` ``(N, 1, S, S)`` float in [0, 1] and each
    window's centre ``(row, col)`` in the stored film's array coordinates; ``shape`` the film's."""

    images: torch.Tensor
    centres: list[tuple[int, int]]
    shape: tuple[int, int]


def load_patches(path: Path, card: ModelCard) -> Patches:
    """Scan a film for a patch model: prepared as the training films, windows of ``roi_size`` film
    pixels every ``roi_size // 2`` over the breast's box, kept where at least half the window is
    breast, each resized to the model's input side."""
    pixels = _read_pixels(path)
    if pixels.ndim != 2:
        raise DataError(f"{path}: a patch model scans grey films, got {pixels.shape[2]} channels")
    film = card.prep.apply(_uint8(pixels))
    mask = film.mask if card.prep.segment else mammo.breast_mask(film.image)
    size, side = card.roi_size, card.image_shape[1]
    if min(film.image.shape) < size:
        raise DataError(f"{path}: is {pixels.shape[0]}x{pixels.shape[1]}, smaller than this run's "
                        f"{size}-pixel patches: give films at the training films' resolution, or "
                        f"patches of exactly {side}x{side}")
    top, bottom, left, right = mammo.bounding_box(mask)
    step, half = max(1, size // 2), size // 2
    rows = range(max(top, half), max(bottom - half, top + 1, half + 1), step)
    cols = range(max(left, half), max(right - half, left + 1, half + 1), step)
    patches, centres = [], []
    for r in rows:
        for c in cols:
            if crop(mask.astype(np.uint8), r, c, size).mean() < 0.5:
                continue
            patches.append(square_resize(crop(film.image, r, c, size), side))
            centres.append((r, mammo.flip_column(c, film.image.shape[1], film.flipped)))
    if not patches:
        raise DataError(f"{path}: no breast tissue found to scan with {size}-pixel patches")
    x = torch.from_numpy(np.stack(patches)).float().div_(255.0).unsqueeze(1)
    return Patches(x, centres, (int(pixels.shape[0]), int(pixels.shape[1])))


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


def _is_region(path: Path, card: ModelCard) -> bool:
    """For a patch model: is this image a region of exactly the model's input size (else a film)?"""
    _, h, w = card.image_shape
    try:
        if path.suffix.lower() == ".dcm":
            return False
        with Image.open(path) as im:
            return tuple(im.size) == (w, h)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False


def _fill(row: dict, card: ModelCard, streams: tuple[str, ...], scores: dict[str, torch.Tensor],
          j: int) -> None:
    decision = scores[DECISION][j]
    k = int(decision.argmax())
    row.update({"predicted": card.classes[k], "index": k, "confidence": round(float(decision[k]), 6)})
    for s in streams:
        for c, name in enumerate(card.classes):
            row[f"{s}.{name}"] = round(float(scores[s][j, c]), 6)


def _classify(predictor: Predictor, files: list[Path], batch_size: int) -> tuple[list[dict], list[dict]]:
    """One row per file (and a patch model's per-patch rows), in the order of ``files``."""
    card = predictor.card
    rows: list[dict] = []
    good: list[tuple[dict, torch.Tensor]] = []
    films: list[tuple[dict, Patches]] = []
    for path in files:
        row: dict = {"file": str(path), "error": ""}
        rows.append(row)
        try:
            if card.patches and not _is_region(path, card):
                films.append((row, load_patches(path, card)))
            else:
                good.append((row, load_image(path, card)))
        except (DataError, OSError) as e:
            row["error"] = str(e)
            log.warning("%s", e)
    streams = (*predictor.client.streams, DECISION)
    for i in range(0, len(good), batch_size):
        chunk = good[i:i + batch_size]
        scores = predictor.scores(torch.stack([x for _, x in chunk]))
        for j, (row, _) in enumerate(chunk):
            _fill(row, card, streams, scores, j)
            row["abnormal_score"] = round(float(card.abnormal_score(scores[DECISION][j:j + 1])[0]), 6)
            if card.patches:
                row["patches"] = 1
    patch_rows: list[dict] = []
    for row, film in films:
        parts = [predictor.scores(x) for x in film.images.split(batch_size)]
        scores = {s: torch.cat([p[s] for p in parts]) for s in streams}
        abnormal = card.abnormal_score(scores[DECISION])
        top = int(abnormal.argmax())
        _fill(row, card, streams, scores, top)
        r, c = film.centres[top]
        row.update({"abnormal_score": round(float(abnormal[top]), 6), "row": r, "col": c, "x": c,
                    "y": film.shape[0] - 1 - r, "patches": len(film.centres)})
        for j, (pr, pc) in enumerate(film.centres):
            patch_rows.append({"file": row["file"], "row": pr, "col": pc, "x": pc,
                               "y": film.shape[0] - 1 - pr, "abnormal_score": round(float(abnormal[j]), 6),
                               **{f"{DECISION}.{name}": round(float(scores[DECISION][j, k]), 6)
                                  for k, name in enumerate(card.classes)}})
    return rows, patch_rows


def _write(out: Path, card: ModelCard, streams: tuple[str, ...], rows: list[dict], patch_rows: list[dict],
           extra: tuple[str, ...] = ()) -> None:
    location = ["row", "col", "x", "y", "patches"] if card.patches else []
    columns = ["file", *extra, "predicted", "index", "confidence", "abnormal_score", *location,
               *(f"{s}.{name}" for s in streams for name in card.classes), "error"]
    write_csv(out, [{c: row.get(c, "") for c in columns} for row in rows], columns)
    if card.patches:
        write_csv(patches_path(out), patch_rows, ["file", *extra, "row", "col", "x", "y", "abnormal_score",
                                                  *(f"{DECISION}.{name}" for name in card.classes)])


def predict_images(predictor: Predictor, files: list[Path], out: Path, batch_size: int = 64) -> list[dict]:
    """Classify ``files`` and write one CSV row per file to ``out``; returns the rows. A file that
    cannot be read gets ``error`` and no scores. ``abnormal_score`` is the decision's ``1 -
    P(normal)`` (or ``P(malignant)``). A patch model scans films (:func:`load_patches`): the row holds
    the most abnormal patch's answer and location, and ``<out>.patches.csv`` every patch's scores."""
    rows, patch_rows = _classify(predictor, files, batch_size)
    _write(out, predictor.card, (*predictor.client.streams, DECISION), rows, patch_rows)
    return rows


def _film_patient(path: Path) -> int | None:
    import re

    from pgsl.data.mias import patient

    m = re.match(r"^(mdb\d{3})", path.name.lower())
    return patient(m[1]) if m else None


def predict_cv(cv_dir: Path, files: list[Path], out: Path, *, model: str | None = None,
               device: torch.device = torch.device("cpu"), batch_size: int = 64) -> dict[str, Any]:
    """Classify MIAS films with a cross-validation's fold models (``pgsl baselines/train --folds``):
    each film named ``mdbNNN`` by the model of the fold that holds its patient, which never trained
    on it (a patient with no sample in the task: fold ``patient % folds``, never trained on either).
    Writes ``out`` (with a ``fold`` column), a patch model's ``<out>.patches.csv`` and
    ``<out>.summary.json``: per-film AUC of normal vs abnormal films, with the films' truth from the
    folder's Info.txt (a film is abnormal when any of its rows is). Returns the summary."""
    from torchmetrics.functional.classification import binary_auroc

    from pgsl.checkpoint import write_json
    from pgsl.data.mias import find_info, parse_info, patient, task_split
    from pgsl.experiments.cv import CV_JSON, MAJORITY, PLAIN

    report = json.loads((cv_dir / CV_JSON).read_text())
    split_models = [m for m in report["models"] if m not in (PLAIN, MAJORITY)]
    name = model or (split_models[0] if split_models else None)
    if name not in split_models:
        raise ValueError(f"{cv_dir} holds no split model {name!r}; it has: "
                         f"{', '.join(split_models) or 'none'}")
    cfg = load_config(cv_dir / "fold-0" / str(name) / "config.json")
    if not cfg.data.data_dir or not Path(cfg.data.data_dir).is_dir():
        raise DataError(f"the cross-validation's MIAS folder {cfg.data.data_dir} is not here: its Info.txt "
                        "says which fold holds each patient")
    info = parse_info(find_info(Path(cfg.data.data_dir)))
    folds = int(report["folds"])
    fold_of: dict[int, int] = {}
    for k in range(folds):
        _, test = task_split(info, task=cfg.data.task, folds=folds, fold=k, cv_seed=int(report["cv_seed"]),
                             seed=cfg.train.seed, localised=cfg.data.protocol == "roi")
        fold_of.update({patient(r.ref): k for r in test})
    by_fold: dict[int, list[Path]] = {}
    rows_by_file: dict[Path, dict] = {}
    for path in files:
        who = _film_patient(path)
        if who is None:
            rows_by_file[path] = {"file": str(path), "error": f"{path.name}: not a MIAS film name (mdbNNN); "
                                  "a cross-validation scores a film by the fold that never trained on it"}
            continue
        by_fold.setdefault(fold_of.get(who, who % folds), []).append(path)
    patch_rows: list[dict] = []
    card: ModelCard | None = None
    streams: tuple[str, ...] = ()
    for k, paths in sorted(by_fold.items()):
        predictor = Predictor.in_process(cv_dir / f"fold-{k}" / str(name), device)
        card, streams = predictor.card, (*predictor.client.streams, DECISION)
        rows, patches = _classify(predictor, paths, batch_size)
        for row in rows:
            row["fold"] = k
            rows_by_file[Path(row["file"])] = row
        patch_rows += [{**p, "fold": k} for p in patches]
    if card is None:
        raise DataError("no MIAS films (mdbNNN.*) among the images")
    rows = [rows_by_file[p] for p in files]
    _write(out, card, streams, rows, patch_rows, extra=("fold",))
    abnormal = {r.ref for r in info if r.label != "normal"}
    known = {r.ref for r in info}
    scored = [(float(r["abnormal_score"]), Path(r["file"]).name[:6].lower() in abnormal) for r in rows
              if not r.get("error") and Path(r["file"]).name[:6].lower() in known]
    summary: dict[str, Any] = {"model": name, "task": cfg.data.task, "protocol": cfg.data.protocol,
                               "films": len(scored), "abnormal_films": sum(t for _, t in scored),
                               "errors": sum(1 for r in rows if r.get("error"))}
    if 0 < summary["abnormal_films"] < len(scored):
        summary["auc_normal_vs_abnormal"] = float(binary_auroc(
            torch.tensor([s for s, _ in scored]), torch.tensor([int(t) for _, t in scored])))
    if patch_rows and card is not None:
        summary.update(film_diagnostics(patch_rows, info, card.roi_size))
    write_json(out.with_name(out.stem + ".summary.json"), summary)
    return summary


FILM_RULES: dict[str, Callable[[torch.Tensor], float]] = {
    "max": lambda s: float(s.max()),  # the answer pgsl predict gives
    "top3_mean": lambda s: float(s.topk(min(3, len(s))).values.mean()),
    "mean": lambda s: float(s.mean()),
}


def film_diagnostics(patch_rows: list[dict], info: list[InfoRow], roi_size: int) -> dict[str, Any]:
    """How a patch model's scan of MIAS films reads at film level, from its per-patch rows
    (``file``, ``x``, ``y`` in Info.txt coordinates, ``abnormal_score``):

    - ``film_rule_auc``: the per-film AUC of normal vs abnormal films when a film's score is the
      maximum (the answer given), the mean of the top 3, or the mean of its patch scores;
    - ``lesions``: over the abnormal rows with coordinates, how many films' top patch covers the
      lesion's centre (``top_patch_on_lesion``) and the median percentile, within its film, of the
      best window covering the centre (``lesion_window_percentile_median``; 1.0: the film's top).
      A model that localises lesions but scores ~90 windows a film has a high percentile and a
      film AUC near 0.5: its false positives on normal films outnumber one lesion window."""
    from torchmetrics.functional.classification import binary_auroc

    from pgsl.data.mias import abnormality

    per_film: dict[str, list[dict]] = {}
    for p in patch_rows:
        per_film.setdefault(Path(p["file"]).name[:6].lower(), []).append(p)
    abnormal = {r.ref for r in info if r.label != "normal"}
    known = sorted(per_film.keys() & {r.ref for r in info})
    scores = {f: torch.tensor([float(p["abnormal_score"]) for p in per_film[f]]) for f in known}
    truth = torch.tensor([int(f in abnormal) for f in known])
    result: dict[str, Any] = {}
    if 0 < int(truth.sum()) < len(known):
        result["film_rule_auc"] = {name: float(binary_auroc(torch.tensor([rule(scores[f]) for f in known]),
                                                             truth)) for name, rule in FILM_RULES.items()}
    on_top, percentiles, lesions = 0, [], 0
    half = roi_size / 2
    for row in info:
        found = abnormality(row)
        if found is None or row.ref not in scores:
            continue
        lesions += 1
        x, y, _ = found
        film, s = per_film[row.ref], scores[row.ref]
        covering = [j for j, p in enumerate(film)
                    if abs(int(p["x"]) - x) < half and abs(int(p["y"]) - y) < half]
        if not covering:
            continue
        best = max(float(s[j]) for j in covering)
        on_top += int(int(s.argmax()) in covering)
        percentiles.append(float((s < best).float().mean()))
    result["lesions"] = {"with_coordinates": lesions, "covered_by_a_window": len(percentiles),
                         "top_patch_on_lesion": on_top,
                         "lesion_window_percentile_median": (statistics.median(percentiles)
                                                             if percentiles else None)}
    return result


def patches_path(out: Path) -> Path:
    """Where a patch model's per-patch scores go beside ``out``."""
    return out.with_name(out.stem + ".patches.csv")


def summary_lines(summary: dict[str, Any], out: Path) -> list[str]:
    """What :func:`predict_cv`'s summary says, as lines for a terminal."""
    auc = summary.get("auc_normal_vs_abnormal")
    lines = [f"classified {summary['films']} film(s) with {summary['model']}'s fold models; "
             + (f"per-film AUC normal vs abnormal {auc:.3f}; " if auc is not None else "") + f"wrote {out}"]
    rules, lesions = summary.get("film_rule_auc"), summary.get("lesions")
    if rules:
        lines.append("per-film AUC by film rule: " + ", ".join(f"{k} {v:.3f}" for k, v in rules.items()))
    if lesions and lesions["covered_by_a_window"]:
        lines.append(f"top patch on the lesion: {lesions['top_patch_on_lesion']} of "
                     f"{lesions['with_coordinates']} lesions; the lesion's window at the "
                     f"{100 * lesions['lesion_window_percentile_median']:.0f}th percentile of its film "
                     "(median)")
    return lines


def classify(run_dir: Path, images: Path, out: Path, *, server: str | None = None,
             site: str | None = None, tls: Path | None = None, insecure: bool = False,
             model: str | None = None, batch_size: int = 64,
             device: str = "cpu") -> tuple[list[str], list[str]]:
    """``pgsl predict``: classify ``images`` (a file or a folder) with ``run_dir`` -- a run in this
    process, a site's run through a ``pgsl server`` at ``server`` (``site``, mutual TLS from
    ``tls``, or none with ``insecure``), or a cross-validation folder (each film by the fold model
    that never saw its patient). Writes ``out``; -> (what was done, the images skipped with their
    reasons)."""
    from pgsl.runtime import resolve_device
    from pgsl.runtime.server import tls_or_insecure

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    files = find_images(images)
    if (run_dir / "cv.json").is_file():
        if server is not None:
            raise ValueError("a cross-validation folder classifies in this process: leave out --server")
        summary = predict_cv(run_dir, files, out, model=model, device=dev, batch_size=batch_size)
        return summary_lines(summary, out), []
    if model is not None:
        raise ValueError("--model picks a model of a cross-validation folder (one with cv.json)")
    if server is None:
        if site is not None or tls is not None or insecure:
            raise ValueError("--site, --tls and --insecure go with --server")
        rows = predict_images(Predictor.in_process(run_dir, dev), files, out, batch_size)
    else:
        from pgsl.transport.client import GrpcChannel, TransportError

        if site is None:
            raise ValueError("with --server give --site, and --tls DIR (mutual TLS) or --insecure")
        tls = tls_or_insecure(tls, insecure)
        try:
            with GrpcChannel(server, site=site, tls_dir=tls) as channel:
                rows = predict_images(Predictor.remote(run_dir, channel, dev), files, out, batch_size)
        except TransportError as e:
            raise ValueError(str(e)) from e
    failed = [str(r["error"]) for r in rows if r["error"]]
    return [f"classified {len(rows) - len(failed)} of {len(rows)} image(s); wrote {out}"], failed

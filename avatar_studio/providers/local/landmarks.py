"""468 face landmarks (plus iris centres) from one photo, with MediaPipe's models on ``ai-edge-litert``.

Why not the ``mediapipe`` package: its last release that ships the face models (0.10.21) pins
``numpy<2``, and this project runs on numpy 2 (``design/local-provider.md`` §1.4, §2.1). The same
Apache-2.0 ``.tflite`` files, taken from that wheel at development time (``resources/face_models/``),
run on the plain TFLite interpreter; what the MediaPipe graph did around them is written here:

1. **Detection** (BlazeFace short range, 128×128, input in [-1, 1]): the photo is letterboxed into
   the square, the 896 SSD anchors decode boxes and six keypoints, and overlapping boxes are merged
   by score-weighted non-maximum suppression. The number of surviving faces decides the errors.
2. **Landmarks** (192×192, input in [0, 1]): a square crop 1.5× the face box, rotated so the eyes
   are level (the model was trained on upright faces), gives 468 points in crop pixels; they are
   mapped back through the same affine frame. A second pass re-crops around the first pass's
   landmarks, which is what MediaPipe's tracking does and what makes the result roll-invariant.
3. **Irises** (64×64): a crop 2.3× the eye-corner distance around each eye; the iris centre is the
   first of the model's five iris points. The model expects a *left* eye, so the subject's right
   eye is mirrored before inference and the result mirrored back.

Coordinates: image pixels with the origin at the top-left corner of the top-left pixel (continuous),
y down; ``z`` is in the same pixel scale, negative towards the camera (MediaPipe's convention).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from avatar_studio.providers.base import ProviderError
from avatar_studio.resources import resource_path

MODEL_DIR = "face_models"
DETECTION_SIZE = 128
LANDMARK_SIZE = 192
IRIS_SIZE = 64
MIN_FACE_PX = 80  # below this the texture is too soft to be worth a head (local-provider.md §4.8)
DETECTION_SCORE = 0.5  # MediaPipe's default min_detection_confidence
OTHER_FACE_SCORE = 0.7  # a second face must be this clear to refuse the photo (avoids posters, patterns)
NMS_IOU = 0.3
LANDMARK_PRESENCE = 0.5  # sigmoid of the landmark model's face logit
ROI_SCALE = 1.5
IRIS_ROI_SCALE = 2.3

# Landmark indices the ROI logic needs (subject's right eye outer/inner corner, left inner/outer).
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (362, 263)


@dataclass(frozen=True)
class FaceLandmarks:
    """What the mesh builder needs from the photo."""

    points: np.ndarray  # (468, 3) float64: x, y in image pixels; z in pixels, negative towards the camera
    iris_right: np.ndarray  # (3,) centre of the subject's right iris (image left), same units
    iris_left: np.ndarray  # (3,) centre of the subject's left iris
    image_size: tuple[int, int]  # (width, height)
    face_width_px: float  # detection box width
    detection_score: float


@dataclass(frozen=True)
class _Detection:
    score: float
    box: np.ndarray  # (4,) x_min, y_min, x_max, y_max in image pixels
    keypoints: np.ndarray  # (6, 2) right eye, left eye, nose tip, mouth, right ear, left ear (image px)


@dataclass(frozen=True)
class _Frame:
    """A square, rotated crop: ``image = origin + u·size·axis_x + v·size·axis_y`` for (u, v) in [0, 1]²."""

    centre: np.ndarray
    size: float
    axis_x: np.ndarray  # unit vector in the image (y down) along the crop's +x
    axis_y: np.ndarray  # unit vector along the crop's +y (axis_x turned 90° clockwise on screen)

    @classmethod
    def around(cls, centre: np.ndarray, size: float, direction: np.ndarray) -> _Frame:
        d = np.asarray(direction, np.float64)
        norm = float(np.hypot(d[0], d[1]))
        d = np.array([1.0, 0.0]) if norm < 1e-9 else d / norm
        return cls(np.asarray(centre, np.float64), float(size), d, np.array([-d[1], d[0]]))

    def to_image(self, crop_xy: np.ndarray, crop_px: int) -> np.ndarray:
        """Crop pixel coordinates (..., 2) → image pixel coordinates."""
        uv = np.asarray(crop_xy, np.float64) / crop_px - 0.5
        return self.centre + self.size * (uv[..., :1] * self.axis_x + uv[..., 1:2] * self.axis_y)

    def from_image(self, xy: np.ndarray) -> np.ndarray:
        """Image pixel coordinates (..., 2) → crop coordinates in units of the crop size, centred on 0."""
        rel = np.asarray(xy, np.float64) - self.centre
        return np.stack([rel @ self.axis_x, rel @ self.axis_y], axis=-1) / self.size

    def sample(self, image: Image.Image, crop_px: int, *, mirror: bool = False) -> np.ndarray:
        """The crop as a (crop_px, crop_px, 3) float32 array in [0, 1], bilinear, black outside the photo.

        A crop much larger than ``crop_px`` is first taken from a box-reduced copy of the photo so
        bilinear sampling does not alias (a 1,000-px face into 192 px).
        """
        factor = max(1, int(self.size // (2 * crop_px)))
        source = image.reduce(factor) if factor > 1 else image
        step = self.size / crop_px / factor
        ax, ay = self.axis_x * step, self.axis_y * step
        if mirror:  # crop column i samples the image where column (crop_px - i) would
            ax = -ax
        origin = self.centre / factor - (ax + ay) * crop_px / 2
        # PIL maps each output point (x, y) to the input point (a·x + b·y + c, d·x + e·y + f).
        data = (ax[0], ay[0], origin[0], ax[1], ay[1], origin[1])
        out = source.transform((crop_px, crop_px), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
        return np.asarray(out, np.float32) / 255.0


class _Model:
    """One TFLite interpreter; ``run`` is serialised because an interpreter is not thread-safe."""

    def __init__(self, filename: str) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path: Path = resource_path(f"{MODEL_DIR}/{filename}")
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=1)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._outputs = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}
        self._lock = threading.Lock()

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self._interpreter.set_tensor(self._input, tensor[None].astype(np.float32, copy=False))
            self._interpreter.invoke()
            return {name: self._interpreter.get_tensor(index).copy() for name, index in self._outputs.items()}


@cache
def _models() -> dict[str, _Model]:
    """Loaded once per process (about 10 ms): a worker generates many heads with the same models."""
    try:
        return {
            "detector": _Model("face_detection_short_range.tflite"),
            "landmarks": _Model("face_landmark.tflite"),
            "iris": _Model("iris_landmark.tflite"),
        }
    except ImportError as exc:
        raise ProviderError(f"the local avatar generator needs the ai-edge-litert package: {exc}") from None
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise ProviderError(f"the local avatar generator's face models cannot be loaded: {exc}") from None


@cache
def _anchors() -> np.ndarray:
    """The 896 anchor centres (x, y) in [0, 1] of BlazeFace short range.

    SSD anchor layout of the model: strides 8, 16, 16, 16 over a 128-px input; layers that share a
    stride share a feature map, and each layer contributes two anchors per cell (aspect ratio 1 plus
    the interpolated scale). With fixed-size anchors only the centres matter.
    """
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = DETECTION_SIZE // stride
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-12)


def _detect(image: Image.Image) -> list[_Detection]:
    """All faces scoring at least DETECTION_SCORE, best first, in image pixels."""
    width, height = image.size
    scale = DETECTION_SIZE / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = Image.new("RGB", (DETECTION_SIZE, DETECTION_SIZE))
    off_x, off_y = (DETECTION_SIZE - new_w) // 2, (DETECTION_SIZE - new_h) // 2
    canvas.paste(image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0), (off_x, off_y))
    tensor = np.asarray(canvas, np.float32) / 127.5 - 1.0
    out = _models()["detector"].run(tensor)
    raw = out["regressors"][0].astype(np.float64)
    logits = np.clip(out["classificators"][0, :, 0].astype(np.float64), -100.0, 100.0)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= DETECTION_SCORE
    if not keep.any():
        return []
    anchors = _anchors()[keep]
    raw, scores = raw[keep] / DETECTION_SIZE, scores[keep]
    centre = raw[:, :2] + anchors
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]

    # Weighted NMS: each cluster of overlapping boxes becomes its score-weighted mean (steadier than
    # keeping only the best box, and what MediaPipe's face detection graph does).
    detections = []
    order = np.argsort(-scores)
    remaining = order
    while remaining.size:
        best = remaining[0]
        overlap = _iou(boxes[best], boxes[remaining]) > NMS_IOU
        members = remaining[overlap]
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(0) / w.sum()
        kps = (keypoints[members] * w[:, :, None]).sum(0) / w.sum()
        detections.append((float(scores[best]), box, kps))
        remaining = remaining[~overlap]

    def to_image(xy: np.ndarray) -> np.ndarray:
        return (xy * DETECTION_SIZE - np.array([off_x, off_y])) / scale

    return [_Detection(score, to_image(box.reshape(2, 2)).reshape(4), to_image(kps)) for score, box, kps in detections]


def _landmarks_in(image: Image.Image, frame: _Frame) -> tuple[np.ndarray, float]:
    """468 landmarks (image px, z in px) inside ``frame`` and the model's face-presence probability."""
    out = _models()["landmarks"].run(frame.sample(image, LANDMARK_SIZE))
    raw = out["conv2d_21"].reshape(468, 3).astype(np.float64)
    presence = 1.0 / (1.0 + np.exp(-float(np.clip(out["conv2d_31"].ravel()[0], -100, 100))))
    points = np.empty_like(raw)
    points[:, :2] = frame.to_image(raw[:, :2], LANDMARK_SIZE)
    points[:, 2] = raw[:, 2] / LANDMARK_SIZE * frame.size
    return points, presence


def _frame_from_landmarks(points: np.ndarray) -> _Frame:
    """MediaPipe's landmarks → ROI: eye-corner axis, bounding box in that rotated frame, ×1.5, square."""
    direction = points[LEFT_EYE_CORNERS[1], :2] - points[RIGHT_EYE_CORNERS[0], :2]
    probe = _Frame.around(np.zeros(2), 1.0, direction)
    local = probe.from_image(points[:, :2])
    lo, hi = local.min(0), local.max(0)
    mid = (lo + hi) / 2
    centre = mid[0] * probe.axis_x + mid[1] * probe.axis_y
    return _Frame.around(centre, ROI_SCALE * float(np.max(hi - lo)), direction)


def _iris_centre(image: Image.Image, points: np.ndarray, corners: tuple[int, int], mirror: bool) -> np.ndarray:
    """Centre of one iris (image px, z from the eye corners), or the eye-loop centroid if the model is unsure."""
    a, b = points[corners[0]], points[corners[1]]
    frame = _Frame.around((a[:2] + b[:2]) / 2, IRIS_ROI_SCALE * float(np.hypot(*(b[:2] - a[:2]))), b[:2] - a[:2])
    out = _models()["iris"].run(frame.sample(image, IRIS_SIZE, mirror=mirror))
    iris = out["output_iris"].reshape(5, 3)[0].astype(np.float64)
    if mirror:
        iris[0] = IRIS_SIZE - iris[0]
    xy = frame.to_image(iris[:2], IRIS_SIZE)
    return np.array([xy[0], xy[1], (a[2] + b[2]) / 2])


def _open_rgb(photo: bytes | Image.Image) -> Image.Image:
    if isinstance(photo, Image.Image):
        return photo.convert("RGB")
    import io

    from PIL import ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(photo)) as img:
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except UnidentifiedImageError:
        raise ProviderError("the photo cannot be read: it is not a JPEG or PNG image") from None
    except Image.DecompressionBombError:
        raise ProviderError("the photo has too many pixels; use one under 40 megapixels") from None
    except (OSError, ValueError):
        raise ProviderError("the photo cannot be read: the image file is truncated or corrupt") from None


def detect_face(photo: bytes | Image.Image) -> FaceLandmarks:
    """Find exactly one face of usable size and return its landmarks.

    ``photo`` is encoded image bytes (EXIF orientation is applied) or an RGB PIL image. Raises
    :class:`ProviderError` (not transient: the same photo fails the same way) when there is no face,
    more than one clear face, or a face narrower than ``MIN_FACE_PX`` pixels.
    """
    image = _open_rgb(photo)
    detections = _detect(image)
    if not detections:
        raise ProviderError("no face was found in the photo; use a well-lit photo that shows one face from the front")
    main = detections[0]
    others = [d for d in detections[1:] if d.score >= OTHER_FACE_SCORE]
    if others:
        raise ProviderError(f"the photo shows {1 + len(others)} faces; use a photo with exactly one face in it")
    width_px = float(main.box[2] - main.box[0])
    if width_px < MIN_FACE_PX:
        raise ProviderError(
            f"the face in the photo is too small ({width_px:.0f} pixels wide); it must be at least "
            f"{MIN_FACE_PX} pixels wide: use a closer or higher-resolution photo"
        )
    box_centre = (main.box[:2] + main.box[2:]) / 2
    eye_axis = main.keypoints[1] - main.keypoints[0]
    frame = _Frame.around(box_centre, ROI_SCALE * float(max(main.box[2:] - main.box[:2])), eye_axis)
    points, presence = _landmarks_in(image, frame)
    if presence < LANDMARK_PRESENCE:
        raise ProviderError(
            "no face was found in the photo (a face-like region was not confirmed); use a well-lit "
            "photo that shows one face from the front"
        )
    refined, presence2 = _landmarks_in(image, _frame_from_landmarks(points))
    if presence2 >= LANDMARK_PRESENCE:
        points = refined
    return FaceLandmarks(
        points=points,
        iris_right=_iris_centre(image, points, RIGHT_EYE_CORNERS, mirror=True),
        iris_left=_iris_centre(image, points, LEFT_EYE_CORNERS, mirror=False),
        image_size=image.size,
        face_width_px=width_px,
        detection_score=main.score,
    )


def model_files() -> dict[str, Any]:
    """Paths of the bundled model files (for ``check`` and diagnostics), loading nothing."""
    return {
        name: resource_path(f"{MODEL_DIR}/{name}")
        for name in ("face_detection_short_range.tflite", "face_landmark.tflite", "iris_landmark.tflite")
    }

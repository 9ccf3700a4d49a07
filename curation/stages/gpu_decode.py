"""Decode and resize JPEGs in batches on a torch device (a GPU, where CPU decode is the bottleneck).

For small models (ViT-B/32 embeds tens of thousands of images a second on one GPU) the CPU cores of a
GPU node cannot decode fast enough. This stage hands the JPEG bytes to torchvision's batched decoder on
the device (nvJPEG on CUDA), resizes them there, and computes the perceptual hash from the same
decoded pixels. It fills exactly the columns `DecodeStage` fills (sha256, width, height, phash,
pixels) with the same meaning, and gives the same reject reasons: every image it does not take on
itself goes to the CPU decoder, one by one —

- anything that is not a plain baseline/progressive JPEG in RGB or greyscale (PNG, WebP, CMYK, ...),
- a JPEG with an EXIF rotation, or larger than `max_pixels` (the CPU decoder names the reason),
- a JPEG that does not end with its end-of-image marker, or holds fewer bytes than its header's size
  needs (`jpeg_too_short`): truncated, which libjpeg would pad with grey where the CPU decoder rejects it,
- any image the device decoder fails on, or decodes to another size than its header says.

The same code runs with device="cpu" (torchvision's libjpeg-turbo decoder): that is how it is tested
on machines without a GPU. Pixels differ slightly from the CPU path (which decodes JPEGs at reduced
scale before its resize), well within what the embedding notices; pHashes differ by a few bits at most.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from curation.images import jpeg_too_short, orientation
from curation.schema import RejectReason
from curation.stages.decode import (
    PHASH_SIZE,
    DecodedImage,
    DecodeStage,
    dct_matrix,
    decode_image,
    phash_from_low_frequencies,
    quiet_warnings,
)

JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
DEVICE_MODES = ("RGB", "L")  # JPEG colour modes the device decoder turns into RGB like PIL does
BATCH_PIXELS = 64 << 20  # decoded pixels per device batch: bounds device memory on huge images
GREY = (0.299, 0.587, 0.114)  # PIL's "L" conversion (ITU-R 601-2 luma)


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int


@dataclass(kw_only=True)
class GpuDecodeStage(DecodeStage):
    """`DecodeStage` with JPEGs decoded and resized in batches on `device` (auto: CUDA when visible)."""

    device: str = "auto"
    _device: torch.device | None = field(default=None, init=False, repr=False)
    _dct: torch.Tensor | None = field(default=None, init=False, repr=False)

    def setup(self) -> None:
        if self._device is not None:
            return
        name = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self._device = torch.device(name)
        self._dct = torch.from_numpy(dct_matrix()).to(self._device, torch.float64)

    def decode_all(self, images: list[bytes | None], kept: list[bool]) -> list[DecodedImage | RejectReason | None]:
        self.setup()
        results: list[DecodedImage | RejectReason | None] = [None] * len(images)
        batch: list[tuple[int, JpegHeader]] = []
        pixels_in_batch = 0
        for i, (data, keep) in enumerate(zip(images, kept)):
            if not keep:
                continue
            header = self.device_header(data)
            if header is None:
                results[i] = self.cpu_decode(data)
                continue
            if batch and pixels_in_batch + header.width * header.height > BATCH_PIXELS:
                self._decode_batch(images, batch, results)
                batch, pixels_in_batch = [], 0
            batch.append((i, header))
            pixels_in_batch += header.width * header.height
        if batch:
            self._decode_batch(images, batch, results)
        return results

    def cpu_decode(self, data: bytes | None) -> DecodedImage | RejectReason:
        return decode_image(data, size=self.image_size, max_pixels=self.max_pixels)

    def device_header(self, data: bytes | None) -> JpegHeader | None:
        """The JPEG's size when the device decoder may take it, else None (the CPU decoder will)."""
        if not data or not data.startswith(JPEG_START) or not data.endswith(JPEG_END) or jpeg_too_short(data):
            return None
        try:
            with quiet_warnings:
                image = Image.open(io.BytesIO(data), formats=("JPEG",))
                width, height = image.size
                if image.format != "JPEG" or image.mode not in DEVICE_MODES or orientation(image) != 1:
                    return None
        except Exception:  # noqa: BLE001 - hostile headers: the CPU decoder gives the reason
            return None
        if width * height > self.max_pixels or min(width, height) < 1:
            return None
        return JpegHeader(width=width, height=height)

    def _decode_batch(self, images: list, batch: list[tuple[int, JpegHeader]], results: list) -> None:
        decoded = self._device_decode([images[i] for i, _ in batch])
        done: list[tuple[int, JpegHeader, torch.Tensor]] = []
        for (i, header), image in zip(batch, decoded):
            if image is None or tuple(image.shape[1:]) != (header.height, header.width):
                results[i] = self.cpu_decode(images[i])
            else:
                done.append((i, header, image))
        if not done:
            return
        images = [image.unsqueeze(0).float() for _, _, image in done]
        pixels = torch.stack([fit_square(image, self.image_size) for image in images])
        thumbs = torch.stack([phash_thumbnail(image) for image in images])
        low = (self._dct @ thumbs @ self._dct.T).cpu().numpy()
        pixels = pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        for j, (i, header, _) in enumerate(done):
            results[i] = DecodedImage(
                width=header.width,
                height=header.height,
                phash=phash_from_low_frequencies(low[j]),
                pixels=pixels[j].tobytes(),
            )

    def _device_decode(self, datas: list[bytes]) -> list[torch.Tensor | None]:
        """(3, H, W) uint8 RGB on the device per image, None where the decoder failed on it."""
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
        with quiet_warnings:
            try:
                return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self._device))
            except Exception:  # noqa: BLE001 - one bad image fails the batch: retry one by one
                decoded = []
                for tensor in tensors:
                    try:
                        decoded.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=self._device))
                    except Exception:  # noqa: BLE001
                        decoded.append(None)
                return decoded


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """float (1, 3, H, W) -> (3, size, size) uint8: centre crop to a square, antialiased bicubic resize
    (PIL's ImageOps.fit with BICUBIC, as the CPU path and open_clip's preprocessing do)."""
    height, width = image.shape[2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[:, :, top : top + side, left : left + side]
    if side != size:
        square = F.interpolate(square, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return square.round().clamp_(0, 255).to(torch.uint8)[0]


def phash_thumbnail(image: torch.Tensor) -> torch.Tensor:
    """float (1, 3, H, W) -> the 32x32 greyscale thumbnail the pHash is computed from (float64, 0-255)."""
    weights = torch.tensor(GREY, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    grey = (image * weights).sum(dim=1, keepdim=True).round_()
    thumb = F.interpolate(grey, size=(PHASH_SIZE, PHASH_SIZE), mode="bicubic", antialias=True, align_corners=False)
    return thumb.round_().clamp_(0, 255)[0, 0].to(torch.float64)

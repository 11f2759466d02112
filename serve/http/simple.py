"""`POST /predict` for people: image files or a pixel CSV in, CSV or JSON of id, label, probabilities out.

    curl -F file=@shoe.png -F file=@bag.jpg http://127.0.0.1:8000/predict
    curl -F file=@test.csv -H 'Accept: text/csv' http://127.0.0.1:8000/predict
    curl --data-binary @shoe.png -H 'Content-Type: image/png' 'http://127.0.0.1:8000/predict?format=csv'

Inputs go through what `foldwise predict` uses: image files through `serve.images.load_image`
(decode, EXIF orientation, channels, resize to the model's size, pixel cap), a pixel CSV through
`PixelCsvReader` (same columns, ids, values check), so a file gives the same pixels, ids and
numbers here as there. Ids: the file name as the model's `id_form` says (name or stem), or the
CSV's id column (row numbers without one). The CSV answer is `id, label, <one column per class>`
with probabilities written as `foldwise predict --probs` writes them.
"""
from __future__ import annotations

import asyncio
import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from serve.errors import UserError
from serve.http.errors import ApiError
from serve.images import default_workers, load_image
from serve.predict import csv_text, open_reader
from serve.submission import PROB_FORMAT

IMAGE_TYPES = ("image/",)
CSV_TYPES = ("text/csv", "application/csv", "text/plain")


def safe_name(filename: str | None, index: int) -> str:
    """The file's own name (no folders), or image<index>."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    return name or f"image{index}"


class PredictInputs:
    """Turns a /predict request into (ids, uint8 images [N, C, H, W]) for one model."""

    def __init__(self, engine, max_images: int, max_pixels: int) -> None:
        self.engine = engine
        self.info = engine.info
        self.spec = replace(self.info.image, max_pixels=min(self.info.image.max_pixels, max_pixels))
        self.max_images = max_images
        self.pool = ThreadPoolExecutor(max_workers=default_workers(), thread_name_prefix="foldwise-decode")

    def _too_many(self, n: int, what: str) -> ApiError:
        return ApiError(413, f"{n} {what} in one request, above the limit of {self.max_images} (--max-images); "
                             "send a job (POST /jobs) for large sets")

    def image_id(self, name: str) -> str:
        return name if self.info.id_form == "name" else PurePosixPath(name).stem

    def decode_images(self, named: list[tuple[str, bytes]]) -> tuple[list[str], np.ndarray]:
        """Decode in threads; the first bad file (in request order) raises its UserError."""
        if len(named) > self.max_images:
            raise self._too_many(len(named), "images")
        out = list(self.pool.map(lambda nb: load_image(nb[1], self.spec, nb[0]), named))
        batch = np.stack(out).transpose(0, 3, 1, 2)
        return [self.image_id(n) for n, _ in named], np.ascontiguousarray(batch)

    def read_csv(self, data: bytes, name: str) -> tuple[list[str], np.ndarray]:
        """A pixel CSV, read and checked by the PixelCsvReader that `foldwise predict` uses."""
        with tempfile.TemporaryDirectory(prefix="foldwise-predict-") as tmp:
            path = Path(tmp) / (PurePosixPath(name).stem + ".csv")
            path.write_bytes(data)
            try:
                reader = open_reader(self.engine, path)
                ids, images = [], []
                for chunk in reader.chunks(self.max_images + 1):
                    if len(ids) + len(chunk.ids) > self.max_images:
                        raise self._too_many(len(ids) + len(chunk.ids), "CSV rows (at least)")
                    ids.extend(chunk.ids)
                    images.append(chunk.images)
            except UserError as exc:
                raise type(exc)(str(exc).replace(f"{tmp}/", "")) from None
        if not ids:
            raise ApiError(422, f"{name}: no rows")
        return [str(i) for i in ids], np.concatenate(images)

    async def parse(self, request: Request) -> tuple[list[str], np.ndarray]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        loop = asyncio.get_running_loop()
        if ctype == "multipart/form-data":
            async with request.form(max_files=2 * self.max_images + 2, max_fields=16) as form:  # closes spooled files
                files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
                if not files:
                    raise ApiError(400, "no files in the form: send -F file=@image.png (one or more) "
                                        "or -F file=@test.csv")
                if len(files) > self.max_images:
                    raise self._too_many(len(files), "files")
                named = [(safe_name(f.filename, i), await f.read()) for i, f in enumerate(files)]
                first_type = (files[0].content_type or "").lower()
            if len(files) == 1 and (named[0][0].lower().endswith(".csv") or first_type in CSV_TYPES[:2]):
                return await loop.run_in_executor(None, self.read_csv, named[0][1], named[0][0])
            return await loop.run_in_executor(None, self.decode_images, named)
        body = await request.body()
        if not body:
            raise ApiError(400, "empty body: send image files or a pixel CSV")
        name = request.query_params.get("name") or ""
        if ctype in CSV_TYPES:
            return await loop.run_in_executor(None, self.read_csv, body, name or "upload.csv")
        if ctype.startswith(IMAGE_TYPES) or ctype == "application/octet-stream":
            return await loop.run_in_executor(None, self.decode_images, [(safe_name(name, 0), body)])
        raise ApiError(415, f"Content-Type '{ctype or 'none'}': send multipart/form-data (files), text/csv "
                            "(a pixel CSV) or image/* (one image)")


def label_column(info) -> str:
    """The predicted-class column: the submission's target column for label submissions, else 'label'."""
    return info.submission.columns[0] if info.submission.kind == "label" else "label"


def render(info, ids: list[str], probs: np.ndarray, request: Request, model: str, provider: str) -> Response:
    """CSV (Accept: text/csv or ?format=csv) or JSON (the default) of id, label and probabilities."""
    labels = np.asarray(info.classes, dtype=object)[probs.argmax(1)]
    wanted = request.query_params.get("format") or ("csv" if "text/csv" in request.headers.get("accept", "")
                                                    else "json")
    if wanted not in ("csv", "json"):
        raise ApiError(400, f"format '{wanted}': use csv or json")
    if wanted == "csv":
        frame = pd.DataFrame(probs, columns=info.classes)
        frame.insert(0, label_column(info), labels)
        frame.insert(0, info.id_column, ids)
        return Response(csv_text(frame, header=True, float_format=PROB_FORMAT), media_type="text/csv")
    rows = [{"id": i, "label": lab, "probabilities": dict(zip(info.classes, (float(p) for p in row)))}
            for i, lab, row in zip(ids, labels, probs)]
    if any(not math.isfinite(p) for row in probs for p in row):
        raise ApiError(500, "the model returned non-finite probabilities")
    return JSONResponse({"model": model, "provider": provider, "classes": info.classes, "predictions": rows})

"""The Open Inference Protocol (KServe v2, as Triton and MLServer speak it) for one foldwise model.

    card = ModelCard.of(engine, name="ensemble", config=config)
    images, wanted = parse_infer(card, body, header_length)     # ApiError on a bad request
    body, headers = encode_infer(card, request_id, probs, wanted)

Requests carry JSON tensors (`"data": [...]`, flat or nested) or, with the binary tensor data
extension, a JSON header of `Inference-Header-Content-Length` bytes followed by raw tensor
bytes (`"parameters": {"binary_data_size": n}`), which is what `tritonclient.http` sends.
Outputs: `probs` FP32 `[N, classes]` and `label` BYTES `[N]` (the class as the competition
spells it); each is returned as JSON or, when asked (`binary_data` per output, or
`binary_data_output` for the request), as binary data after the JSON header.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import numpy as np

from serve.http.errors import ApiError

VERSION = "1"
HEADER_LENGTH = "Inference-Header-Content-Length"
OUTPUTS = {"probs": "FP32", "label": "BYTES"}


@dataclass(frozen=True)
class ModelCard:
    """What the protocol needs to know about the served model."""
    name: str
    input_name: str
    chw: tuple[int, int, int]
    classes: list[str]
    max_images: int
    parameters: dict = field(default_factory=dict)

    @classmethod
    def of(cls, engine, name: str, max_images: int, extra: dict | None = None) -> ModelCard:
        info = engine.info
        h, w, c = info.image_shape
        parameters = {"classes": json.dumps(info.classes), "class_names": json.dumps(info.class_names),
                      "provider": engine.provider, "id_column": info.id_column,
                      "submission_kind": info.submission.kind, "image": json.dumps(info.image.to_dict()),
                      "folds": json.dumps(info.folds), "metric": info.metric, **(extra or {})}
        return cls(name, engine.input_name, (c, h, w), list(info.classes), max_images, parameters)

    def metadata(self) -> dict:
        """`GET /v2/models/{name}`: inputs, outputs and (as parameters) classes and provider."""
        c, h, w = self.chw
        return {"name": self.name, "versions": [VERSION], "platform": "onnxruntime_onnx",
                "inputs": [{"name": self.input_name, "datatype": "UINT8", "shape": [-1, c, h, w]}],
                "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, len(self.classes)]},
                            {"name": "label", "datatype": "BYTES", "shape": [-1]}],
                "parameters": self.parameters}


def check_model(card: ModelCard, name: str, version: str | None = None) -> None:
    """404 unless `name` (and `version`, if given) is the served model."""
    if name != card.name:
        raise ApiError(404, f"unknown model '{name}' (this server has '{card.name}')")
    if version not in (None, "", VERSION):
        raise ApiError(404, f"unknown version '{version}' of model '{name}' (available: {VERSION})")


def _json_part(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ApiError(400, f"{HEADER_LENGTH}: '{header_length}' is not a number") from None
        if not 0 < n <= len(body):
            raise ApiError(400, f"{HEADER_LENGTH} {n} does not fit a body of {len(body)} bytes")
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    try:
        request = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request is not valid JSON ({exc.__class__.__name__}: {str(exc)[:80]})") from None
    if not isinstance(request, dict):
        raise ApiError(400, "request must be a JSON object with 'inputs'")
    return request, binary


def _shape(tensor: dict, card: ModelCard) -> tuple[int, ...]:
    name = card.input_name
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ApiError(400, f"input {name}: 'shape' must be a list of integers")
    c, h, w = card.chw
    if len(shape) != 4 or tuple(shape[1:]) != (c, h, w) or shape[0] < 1:
        raise ApiError(422, f"input {name}: shape {shape}, the model takes [N, {c}, {h}, {w}] with N >= 1")
    if shape[0] > card.max_images:
        raise ApiError(413, f"input {name}: {shape[0]} images in one request, above the limit of "
                            f"{card.max_images} (--max-images); send several requests or a job")
    return tuple(shape)


def _tensor_data(tensor: dict, shape: tuple[int, ...], binary: bytes, offset: int, name: str) -> tuple[np.ndarray, int]:
    count = int(np.prod(shape))
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise ApiError(400, f"input {name}: 'parameters' must be an object")
    if "shared_memory_region" in params:
        raise ApiError(400, f"input {name}: shared memory is not supported by this server")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or size != count:
            raise ApiError(400, f"input {name}: binary_data_size {size!r}, "
                                f"expected {count} bytes for shape {list(shape)}")
        if offset + size > len(binary):
            raise ApiError(400, f"input {name}: binary_data_size {size} is past the end of the body")
        return np.frombuffer(binary, np.uint8, size, offset).reshape(shape), offset + size
    if "data" not in tensor:
        raise ApiError(400, f"input {name}: no 'data' and no binary_data_size")
    try:
        values = np.asarray(tensor["data"])
    except ValueError:
        raise ApiError(400, f"input {name}: 'data' is not a regular array") from None
    if values.size != count:
        raise ApiError(400, f"input {name}: {values.size} values in 'data', shape {list(shape)} needs {count}")
    if values.dtype.kind not in "iu" or (values.size and (values.min() < 0 or values.max() > 255)):
        raise ApiError(422, f"input {name}: UINT8 data must be integers 0-255")
    return values.astype(np.uint8).reshape(shape), offset


def parse_infer(card: ModelCard, body: bytes,
                header_length: str | None) -> tuple[np.ndarray, dict[str, bool], str | None]:
    """(images uint8 [N, C, H, W], {output name: as binary}, request id) of a v2 infer request."""
    request, binary = _json_part(body, header_length)
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        raise ApiError(400, "request has no 'inputs' list")
    names = [t.get("name") for t in inputs]
    if len(inputs) != 1 or names[0] != card.input_name:
        raise ApiError(400, f"inputs {names}: the model takes one input, '{card.input_name}'")
    tensor = inputs[0]
    datatype = tensor.get("datatype")
    if datatype != "UINT8":
        raise ApiError(422, f"input {card.input_name}: datatype {datatype}, the model takes UINT8 pixels 0-255")
    shape = _shape(tensor, card)
    images, _ = _tensor_data(tensor, shape, binary, 0, card.input_name)
    params = request.get("parameters") or {}
    binary_default = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    requested = request.get("outputs")
    if requested is None:
        wanted = {name: binary_default for name in OUTPUTS}
    else:
        if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
            raise ApiError(400, "'outputs' must be a list of objects")
        wanted = {}
        for out in requested:
            name = out.get("name")
            if name not in OUTPUTS:
                raise ApiError(400, f"unknown output '{name}' (the model has {', '.join(OUTPUTS)})")
            p = out.get("parameters") or {}
            if "classification" in p:
                raise ApiError(400, "the classification extension is not supported; ask for 'label' or 'probs'")
            wanted[name] = bool(p.get("binary_data", binary_default))
    request_id = request.get("id")
    return images, wanted, (str(request_id) if request_id is not None else None)


def _bytes_tensor(values: list[str]) -> bytes:
    parts = []
    for v in values:
        b = v.encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def encode_infer(card: ModelCard, request_id: str | None, probs: np.ndarray,
                 wanted: dict[str, bool]) -> tuple[bytes, dict[str, str]]:
    """The response body and headers for `probs` `[N, classes]`."""
    outputs, blobs = [], []
    labels = None
    for name, as_binary in wanted.items():
        if name == "probs":
            array = np.ascontiguousarray(probs, dtype=np.float32)
            shape, datatype = list(array.shape), "FP32"
            raw = array.tobytes() if as_binary else None
            data = None if as_binary else array.ravel().tolist()
        else:
            labels = labels or [card.classes[i] for i in probs.argmax(1)]
            shape, datatype = [len(labels)], "BYTES"
            raw = _bytes_tensor(labels) if as_binary else None
            data = None if as_binary else labels
        entry = {"name": name, "datatype": datatype, "shape": shape}
        if as_binary:
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = data
        outputs.append(entry)
    response = {"model_name": card.name, "model_version": VERSION, "outputs": outputs}
    if request_id is not None:
        response["id"] = request_id
    head = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(blobs), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}

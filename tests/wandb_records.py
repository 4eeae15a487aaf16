"""Read back a W&B offline run: the protobuf records of its `run-<id>.wandb` file (a LevelDB log)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

BLOCK_SIZE = 32768      # LevelDB log blocks
RECORD_HEADER_SIZE = 7  # crc32c (4), length (2), type (1)
FILE_HEADER_SIZE = 7    # ":W&B", magic (2), version (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def record_payloads(path: Path) -> Iterator[bytes]:
    """The payload of every record of a .wandb file, chunks joined."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    offset, pending = FILE_HEADER_SIZE, b""
    while offset + RECORD_HEADER_SIZE <= len(data):
        room = BLOCK_SIZE - offset % BLOCK_SIZE
        if room < RECORD_HEADER_SIZE:  # the block's tail is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + RECORD_HEADER_SIZE])
        chunk = data[offset + RECORD_HEADER_SIZE:offset + RECORD_HEADER_SIZE + length]
        offset += RECORD_HEADER_SIZE + length
        if kind == 0:
            break
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            yield pending


def offline_run(run_dir: Path) -> tuple[dict[str, object], dict[str, object]]:
    """The config and the last logged value of each history key of the W&B offline run in `run_dir`."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    config: dict[str, object] = {}
    last: dict[str, object] = {}
    for payload in record_payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            last.update({item_key(item): json.loads(item.value_json) for item in record.history.item})
    return config, last


def item_key(item: object) -> str:
    """A history item's key: `key`, or its `nested_key` parts joined by '/'."""
    return item.key or "/".join(item.nested_key)

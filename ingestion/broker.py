"""The embedded broker: kombu's file transport, with each message published atomically.

kombu's file transport creates a message file and then writes it, so a consumer polling the
folder can take the file while it is still empty and fail to decode it. Here a message is
written under a name no consumer looks at and renamed into place, and a consumer moves a
message into a folder beside the queue (one rename: exactly one consumer gets it) before
reading it.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps, loads

#: The URL of the embedded broker.
SCHEME = "ingestion-files"


class Channel(filesystem.Channel):
    """A file-transport channel whose messages never appear half written."""

    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(time.monotonic() * 1000):015d}_{uuid.uuid4()}.{queue}.msg"
        folder = Path(self.data_folder_out)
        partial = folder / f".partial-{uuid.uuid4()}"
        try:
            partial.write_bytes(dumps(payload).encode())  # type: ignore[no-untyped-call]
            os.replace(partial, folder / name)
        except OSError as exc:
            raise ChannelError(f"cannot publish to the file broker in {folder}: {exc}") from exc

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        suffix = f"{queue}.msg"
        inbox = Path(self.data_folder_in)
        taken = Path(self.processed_folder)
        for name in sorted(os.listdir(inbox)):
            if name.startswith(".") or name.partition(".")[2] != suffix:
                continue
            target = taken / name
            try:
                os.replace(inbox / name, target)
            except OSError:
                continue  # another consumer took it
            try:
                payload = target.read_bytes()
                target.unlink()
            except OSError as exc:
                raise ChannelError(f"cannot read {target} from the file broker: {exc}") from exc
            return loads(payload.decode())  # type: ignore[no-untyped-call]
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel
    driver_type = "filesystem"
    driver_name = SCHEME


TRANSPORT_ALIASES[SCHEME] = "ingestion.broker:Transport"

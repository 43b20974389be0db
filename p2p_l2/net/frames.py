"""Reading whole frames off a trio stream (the one loop every reader shares)."""

from __future__ import annotations

import trio

from ..wire import FrameDecoder


async def receive_frame(stream: trio.abc.ReceiveStream, decoder: FrameDecoder) -> bytes | None:
    """The next frame, or None at end of stream; RemoteProtocolError on a bad length."""
    frame = decoder.next_frame()
    while frame is None:
        data = await stream.receive_some(65536)
        if not data:
            return None
        decoder.feed(data)
        frame = decoder.next_frame()
    return frame

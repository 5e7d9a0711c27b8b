"""Stream an audio file to /v1/stream and print the server's events, one JSON object a line.

    python examples/stream_client.py speech.wav                      # real-time pace
    python examples/stream_client.py speech.wav --fast --interim     # as fast as the server reads
    python examples/stream_client.py speech.wav --url ws://host:8000/v1/stream --api-key KEY

The file is sent at its own sample rate (the server resamples), as pcm_s16le unless
--encoding f32le, in --chunk-ms frames; at the end the client sends {"type": "stop"} and
waits for the remaining finals and the close. Exit status 1 if the server sent an error.
Needs only numpy, soundfile and websockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


@dataclass
class StreamResult:
    events: list[dict]
    close_code: int | None
    started: float  # time.monotonic() when the first frame's audio "began" (real-time pace)
    close_reason: str | None = None  # e.g. "keepalive ping timeout" when no close frame came


def encode(samples: np.ndarray, encoding: str) -> bytes:
    if encoding == "pcm_s16le":
        return (np.clip(samples, -1, 1) * 32767).round().astype("<i2").tobytes()
    return samples.astype("<f4").tobytes()


async def stream_audio(
    url: str,
    samples: np.ndarray,
    sample_rate: int,
    *,
    encoding: str = "pcm_s16le",
    chunk_ms: float = 100.0,
    realtime: bool = True,
    options: dict | None = None,
    api_key: str | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> StreamResult:
    """Send mono float32 `samples` as frames; collect events until the server closes.

    At real-time pace each frame leaves when its audio would have finished recording
    (a microphone's timing), so `started + t` is when audio time `t` existed.
    """
    query = urlencode({"sample_rate": sample_rate, "encoding": encoding, **(options or {})})
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    frame = max(1, int(sample_rate * chunk_ms / 1000))
    events: list[dict] = []
    # PCM does not compress: permessage-deflate would only cost CPU on both ends.
    async with connect(
        f"{url}?{query}", additional_headers=headers, max_size=None, compression=None
    ) as ws:
        ready = json.loads(await ws.recv())
        if on_event:
            on_event(ready)
        if ready.get("type") == "error":
            return StreamResult([ready], ws.close_code, time.monotonic())

        async def receive() -> None:
            try:
                async for message in ws:
                    events.append(json.loads(message))
                    if on_event:
                        on_event(events[-1])
            except ConnectionClosed:
                pass

        receiver = asyncio.create_task(receive())
        started = time.monotonic()
        try:
            for index, position in enumerate(range(0, samples.shape[0], frame)):
                piece = samples[position : position + frame]
                if realtime:
                    due = started + (position + piece.shape[0]) / sample_rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                await ws.send(encode(piece, encoding))
                if not realtime and index % 50 == 0:
                    await asyncio.sleep(0)  # let the receiver print while sending flat out
            await ws.send(json.dumps({"type": "stop"}))
        except ConnectionClosed:
            pass  # the server closed early (an error event says why)
        await receiver
        return StreamResult(events, ws.close_code, started, ws.close_reason)


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    return samples.mean(axis=1), rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file", type=Path, help="any file libsndfile reads (wav, flac, ogg, mp3)")
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream")
    parser.add_argument("--fast", action="store_true", help="send as fast as the server reads")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per frame")
    parser.add_argument("--encoding", choices=["pcm_s16le", "f32le"], default="pcm_s16le")
    parser.add_argument("--interim", action="store_true", help="ask for partial results")
    parser.add_argument("--min-silence-ms", type=float, help="silence that ends an utterance")
    parser.add_argument("--api-key", help="when the server requires one")
    args = parser.parse_args(argv)

    samples, rate = read_mono(args.file)
    options: dict = {"interim": str(args.interim).lower()}
    if args.min_silence_ms is not None:
        options["min_silence_ms"] = args.min_silence_ms
    try:
        result = asyncio.run(
            stream_audio(
                args.url,
                samples,
                rate,
                encoding=args.encoding,
                chunk_ms=args.chunk_ms,
                realtime=not args.fast,
                options=options,
                api_key=args.api_key,
                on_event=lambda event: print(json.dumps(event), flush=True),
            )
        )
    except InvalidStatus as refused:  # refused at the handshake: the body says why
        print(refused.response.body.decode(errors="replace"), file=sys.stderr)
        return 1
    print(json.dumps({"closed": result.close_code}), flush=True)
    return 1 if any(event.get("type") == "error" for event in result.events) else 0


if __name__ == "__main__":
    sys.exit(main())

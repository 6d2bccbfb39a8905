"""Sound both ways: the robot's microphone to every viewer, one viewer's voice to its speaker.

    microphone (PortAudio callback thread) ─┐                 ┌─► PeerAudioTrack ─► viewer 1
    tone (its own thread) ──────────────────┼─► AudioFrame ─► │   (bounded queue,
                                            │   (pts on the   │    drop-oldest)
                                            │   event loop)   │
                                            └─► Opus, encoded once (thread) ─► AudioHub ─► ...

    viewer's microphone (aiortc decodes) ─► only the granted talker's frames ─► Speaker
                                            (TalkLine: one at a time)         (OutputStream)

Modules: `devices` (PortAudio and device lookup), `base` (the source contract), `microphone`,
`tone`, `clock` (pts), `fanout` (hub and per-viewer tracks), `opus` (the shared encoder),
`component` (the audio singleton and its peer extension), `speaker`, `talk` (talk-back),
`http` (/api/talk, /api/events and the CA download).
"""

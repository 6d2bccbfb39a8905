"""One RTCPeerConnection per viewer (`peers`), what it needs from ICE and TURN (`ice`, `turn`),
what it learns about its link (`link`), and the `control` data channel."""

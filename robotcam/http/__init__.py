"""Everything aiohttp: the app and its routes (`server`), signaling (`signaling/`: /offer, WHEP,
/ws), access control's middleware and login routes (`auth`), media routes (`media`: stills,
MJPEG, metrics, recordings), talk and events (`audio`, `events`)."""

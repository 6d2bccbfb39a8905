"""Video, in data-path order: sources deliver frames or packets, `transform` prepares each frame
once, `encoder` encodes it once per codec and rung, `hub` fans the packets out to viewers, and
`pipeline` owns all of them for one camera. `stills` and `mjpeg` read the newest picture."""

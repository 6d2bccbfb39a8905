"""The daemon's life: `daemon` starts and stops the components in order, `runner` is the
long-running service (signals, HTTP, sd_notify through `notify`), `reload` applies a new config,
plus logging, TLS files, process figures and the Prometheus registry."""

"""Writing media to disk: the fMP4 recorder, a reader of the shared hubs like any viewer."""

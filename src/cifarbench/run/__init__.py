"""The run folder: its layout, the recorder that writes it (metrics.csv, checkpoints, figures,
summary.json), the checkpoint format, trackers, background drawing, provenance and folder names."""

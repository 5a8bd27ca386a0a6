"""The Spectra dashboard: a TensorBoard plugin that shows the run files under a log directory."""

"""Ray Tune over a method's space: the trial driver, the Tuner, callbacks, telemetry."""

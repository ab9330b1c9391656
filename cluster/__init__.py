"""The rayfolio CLI, Ray connection, run configuration, job submission and the main job."""

"""Running a service: load its image, verify the manifest, attest, serve."""

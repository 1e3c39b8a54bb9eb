"""Strictly validated file formats: manifests, trust files, signatures, service configs."""

"""Helpers shared by the tests and the scripts: a gunicorn server on a free port and its
readiness wait (``server_utils``), digit renderings as users upload them (``renderings``),
the fuzzing corpus (``fuzz_corpus``), numerical gradients (``gradcheck``), a keep-alive load
generator (``load_client``), handwritten-like sample folders (``writing``) and the podman
image and container helpers (``container_utils``).

Installed with the package in development (``pip install -e .``), never in the image.
"""

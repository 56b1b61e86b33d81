"""gunicorn configuration for ``gunicorn -c gunicorn.conf.py`` in a checkout.

The settings and hooks live in ``ocr_service/gunicorn_config.py`` so that an installed package
(e.g. the Docker image, where ``ocr-serve`` passes that module) uses exactly the same ones.
"""

from ocr_service.gunicorn_config import *  # noqa: F403

import logging

import uvicorn

from metabgm_shared.settings import Gateway

from .app import create_app
from .redact import RedactSecrets


def main() -> None:
    settings = Gateway()
    logging.getLogger("uvicorn.access").addFilter(RedactSecrets())
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()

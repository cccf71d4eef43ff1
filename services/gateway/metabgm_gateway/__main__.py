import uvicorn

from metabgm_shared.settings import Gateway

from .app import create_app
from .protocol import HeaderDeadlineH11
from .redact import install


def main() -> None:
    settings = Gateway()
    install()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        http=HeaderDeadlineH11.with_timeout(settings.header_timeout_s),
    )


if __name__ == "__main__":
    main()

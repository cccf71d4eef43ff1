import uvicorn

from metabgm_shared.settings import Gateway

from .app import create_app


def main() -> None:
    settings = Gateway()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()

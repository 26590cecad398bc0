"""A throwaway Redis for the demo and the tests: loopback only, nothing written to disk."""


def command(port: int) -> list[str]:
    return [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]

"""Placeholder: the 'cache' verb is being written."""


def register(sub) -> None:
    return None

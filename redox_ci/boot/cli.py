"""Placeholder: the 'boot' verb is being written."""


def register(sub) -> None:
    return None

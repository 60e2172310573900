"""Modal screens of the chat client: help and the quick room switcher."""

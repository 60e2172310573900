"""chat_tui: the full-screen Textual chat client."""

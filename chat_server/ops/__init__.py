"""Running the server: its settings (``settings``), the command line (``cli``), uvicorn in the
foreground (``serve``), the background server (``daemon``), and the log (``logs``)."""

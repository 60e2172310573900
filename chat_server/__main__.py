from chat_server.ops.cli import main

raise SystemExit(main())

from ddcat.cli import main

raise SystemExit(main())

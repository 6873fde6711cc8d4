from cma_tool.cli import main

raise SystemExit(main())

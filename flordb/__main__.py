from flordb.interfaces.cli import main

raise SystemExit(main())

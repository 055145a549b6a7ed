from rolegate.cli import main

raise SystemExit(main())

from ssnbench.cli import main

raise SystemExit(main())

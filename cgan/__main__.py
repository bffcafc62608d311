from cgan.cli import main

raise SystemExit(main())

from bytepair.cli import main

raise SystemExit(main())
